"""Normalisation: layer_norm, batch_norm, normalize.

layer_norm normalises each sample over its last dimensions (the n features in normalized_shape):

    mu = mean(x),  var = mean((x - mu)^2),  r = 1 / sqrt(var + eps)
    xhat = (x - mu) r,   y = xhat * weight + bias

batch_norm normalises each channel (dimension 1) over the batch and every spatial position, with
the batch's statistics in training (and it updates the running ones) or the running ones in
evaluation. normalize divides by the p-norm: y = x / max(||x||_p, eps).

layer_norm runs the fused kernel miniclip.kernels.layer_norm (one pass for mean and variance,
see kernels/layer_norm/) through FusedLayerNorm; LayerNorm, with the hand-derived backward below
written in array operations, stays as its test oracle. batch_norm and normalize are composed
from the primitives. Checked by tests/functional/test_normalization.py: float64 gradcheck of
both Functions, the fused against LayerNorm in both kernel modes, torch.nn.functional on the
same inputs (values, gradients, running statistics).
"""
from miniclip.backend import get_array_module
from miniclip.kernels import layer_norm as layer_norm_kernels
from miniclip.ops import clamp, reshape
from miniclip.tensor import Function, Tensor, as_tensor


class LayerNorm(Function):
    """y = xhat * weight + bias over the last `n_dims` dimensions (n elements per sample).

    Backward. With g = dy * weight (the gradient reaching xhat), and per sample
        d mu / dx_j = 1/n,   d r / dx_j = -r^3 (x_j - mu) / n = -r^2 xhat_j / n,
        d xhat_i / dx_j = r (delta_ij - 1/n - xhat_i xhat_j / n)
    so
        dx_j = r (g_j - mean(g) - xhat_j mean(g * xhat))
        dw   = sum over the samples of dy * xhat,      db = sum over the samples of dy
    """

    def forward(self, x, weight, bias, n_dims=1, eps=1e-5):
        xp = get_array_module(x)
        self.dims = tuple(range(x.ndim - n_dims, x.ndim))
        mu = x.mean(axis=self.dims, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=self.dims, keepdims=True)           # biased, as torch
        self.r = 1 / xp.sqrt(var + eps)
        self.xhat = (x - mu) * self.r
        self.weight = weight
        return self.xhat * weight + bias

    def backward(self, dy):
        g = dy * self.weight
        dx = self.r * (g - g.mean(axis=self.dims, keepdims=True)
                       - self.xhat * (g * self.xhat).mean(axis=self.dims, keepdims=True))
        samples = tuple(range(dy.ndim - len(self.dims)))
        dw = (dy * self.xhat).sum(axis=samples) if self.inputs[1].requires_grad else None
        db = dy.sum(axis=samples) if self.inputs[2].requires_grad else None
        return dx, dw, db


class FusedLayerNorm(Function):
    """LayerNorm's forward and backward by the fused kernel (miniclip.kernels.layer_norm), which
    normalises over the last dimension: the `n_dims` trailing dimensions are flattened into one."""

    def forward(self, x, weight, bias, n_dims=1, eps=1e-5):
        rows = x.shape[:x.ndim - n_dims] + (-1,)
        self.x, self.weight = x.reshape(rows), weight.reshape(-1)               # (..., n), (n,)
        y, self.mean, self.rstd = layer_norm_kernels.layer_norm_forward(self.x, self.weight,
                                                                       bias.reshape(-1), eps)
        return y.reshape(x.shape)

    def backward(self, dy):
        dx, dw, db = layer_norm_kernels.layer_norm_backward(dy.reshape(self.x.shape), self.x, self.weight,
                                                            self.mean, self.rstd)
        x, weight, bias = self.inputs
        return dx.reshape(x.shape), dw.reshape(weight.shape), db.reshape(bias.shape)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """torch.nn.functional.layer_norm: normalise over the trailing dims `normalized_shape`.
    A missing weight acts as ones and a missing bias as zeros (constants, no gradient).
    The fused kernel runs when x, weight and bias share a float dtype, else LayerNorm."""
    x = as_tensor(x)
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    n_dims = len(normalized_shape)
    if x.shape[x.ndim - n_dims:] != normalized_shape:
        raise ValueError(f"layer_norm: normalized_shape {normalized_shape} must match the last "
                         f"{n_dims} dimension(s) of the input, got input of shape {x.shape}")
    for name, param in (("weight", weight), ("bias", bias)):
        if param is not None and param.shape != normalized_shape:
            raise ValueError(f"layer_norm: {name} must have shape {normalized_shape}, got {param.shape}")
    xp = get_array_module(x.data)
    weight = weight if weight is not None else Tensor(xp.ones(normalized_shape, dtype=x.dtype))
    bias = bias if bias is not None else Tensor(xp.zeros(normalized_shape, dtype=x.dtype))
    fused = x.dtype.name in ("float32", "float64") and x.dtype == weight.dtype == bias.dtype
    Fn = FusedLayerNorm if fused and x.size else LayerNorm
    return Fn.apply(x, weight, bias, n_dims=n_dims, eps=eps)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5):
    """torch.nn.functional.batch_norm for x (N, C, ...): per channel c,

        y = (x - mean_c) / sqrt(var_c + eps) * weight_c + bias_c

    training=True: mean_c, var_c are the batch's (over N and the spatial dims, var biased), and
    running_mean / running_var (arrays or tensors of shape (C,), or None) are updated in place:
        running_mean = (1 - momentum) running_mean + momentum mean_c
        running_var  = (1 - momentum) running_var  + momentum var_c * n / (n - 1)   (unbiased)
    training=False: the running statistics are used, and nothing is updated.
    """
    x = as_tensor(x)
    if x.ndim < 2:
        raise ValueError(f"batch_norm: expected input of shape (N, C, ...), got {x.shape}")
    C = x.shape[1]
    for name, stat in (("running_mean", running_mean), ("running_var", running_var),
                       ("weight", weight), ("bias", bias)):
        if stat is not None and tuple(stat.shape) != (C,):
            raise ValueError(f"batch_norm: {name} must have shape ({C},) for input {x.shape} "
                             f"with {C} channels, got {tuple(stat.shape)}")
    dims = (0,) + tuple(range(2, x.ndim))                       # every dimension but the channels
    channel_shape = (1, C) + (1,) * (x.ndim - 2)                  # (1, C, 1, 1)
    if training:
        n = x.size // C
        if n == 1:
            raise ValueError(f"batch_norm: training needs more than 1 value per channel, got input {x.shape}")
        mean = x.mean(dims, keepdim=True)                        # (1, C, 1, 1)
        centered = x - mean
        var = (centered * centered).mean(dims, keepdim=True)     # (1, C, 1, 1)
        if running_mean is not None:
            stat = running_mean.data if isinstance(running_mean, Tensor) else running_mean
            stat[...] = (1 - momentum) * stat + momentum * mean.data.reshape(C)
        if running_var is not None:
            stat = running_var.data if isinstance(running_var, Tensor) else running_var
            stat[...] = (1 - momentum) * stat + momentum * var.data.reshape(C) * (n / (n - 1))
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: training=False needs running_mean and running_var")
        centered = x - reshape(running_mean, channel_shape)
        var = reshape(running_var, channel_shape)
    y = centered / (var + eps).sqrt()
    if weight is not None:
        y = y * reshape(weight, channel_shape)
    if bias is not None:
        y = y + reshape(bias, channel_shape)
    return y


def normalize(x, p=2.0, dim=1, eps=1e-12):
    """torch.nn.functional.normalize: x / max(||x||_p, eps) along `dim`.

    The clamp is applied to sum |x|^p before the root (at eps^p, the same condition): for an
    all-zero row the root's derivative at 0 is infinite, and 0 * inf would make the gradient NaN.
    """
    x = as_tensor(x)
    norm = clamp((x.abs() ** p).sum(dim, keepdim=True), min=eps ** p) ** (1 / p)
    return x / norm
