"""Fused layer norm, GELU and QuickGELU (array level: NumPy or CuPy in and out).

    y  = (x - mean) * rstd * weight + bias,  rstd = 1 / sqrt(var + eps), over the last dim
    dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),  dxhat = dy * weight
    gelu(x) = x * Phi(x) (exact, erf),   quick_gelu(x) = x * sigmoid(1.702 x)

The activations take an optional bias (C,) added to x (..., C) inside the same pass: act(x + b)
and its derivative at x + b, so a linear layer followed by the activation (a transformer MLP's
c_fc) need not write x + b out first (functional/mlp.py; the in-place bias add alone cost more
than the GELU pass, measured 1.7 against 1.4 ms on 4160 x 1024).

Implementations: reference.py (NumPy, the definition), numba_cpu.py, numba_cuda.py (v1, v2).
Which one runs: reference.py in `miniclip.kernels.use("reference")` mode, otherwise numba_cpu
for NumPy arrays and the newest numba_cuda version for CuPy arrays. x may have any leading
dimensions, (..., C); mean and rstd have shape x.shape[:-1] and are float64.
"""
from miniclip.backend import get_array_module

from .. import pick


def _float_array(name, x, min_ndim=0):
    dtype = getattr(x, "dtype", None)
    if getattr(x, "ndim", -1) < min_ndim or getattr(dtype, "name", None) not in ("float32", "float64"):
        raise TypeError(f"{name}: expected a float32 or float64 array with at least {min_ndim} dimension(s), "
                        f"got {type(x).__name__} of shape {getattr(x, 'shape', None)} dtype {dtype}")
    # The kernels read rows as contiguous runs: copy a strided view once, here, on purpose.
    return get_array_module(x).ascontiguousarray(x)


def _like(name, v, shape, dtype):
    if getattr(v, "shape", None) != tuple(shape) or v.dtype != dtype:
        raise ValueError(f"{name}: expected shape {tuple(shape)} dtype {dtype}, "
                         f"got shape {getattr(v, 'shape', None)} dtype {getattr(v, 'dtype', None)}")
    return get_array_module(v).ascontiguousarray(v)


def _rows(x):
    """x (..., C) as a 2-D (N, C) view, and the leading shape to give back."""
    if x.shape[-1] == 0 or x.size == 0:
        raise ValueError(f"x: expected at least one row of at least one value, got shape {x.shape}")
    return x.reshape(-1, x.shape[-1]), x.shape[:-1]


def layer_norm_forward(x, weight, bias, eps=1e-5):
    """(y, mean, rstd): layer norm of x (..., C) over its last dim; weight, bias (C,) like x.

    y has x's shape and dtype; mean and rstd have shape x.shape[:-1], float64.
    """
    x = _float_array("x", x, min_ndim=1)
    C = x.shape[-1]
    weight = _like("weight", weight, (C,), x.dtype)
    bias = _like("bias", bias, (C,), x.dtype)
    if not eps > 0:
        raise ValueError(f"eps: expected a positive number, got {eps!r}")
    x2, lead = _rows(x)
    y, mean, rstd = pick("layer_norm", x).layer_norm_forward(x2, weight, bias, eps)
    return y.reshape(x.shape), mean.reshape(lead), rstd.reshape(lead)


def layer_norm_backward(dy, x, weight, mean, rstd):
    """(dx, dweight, dbias): gradients of layer norm given dy like x, and the forward's mean, rstd."""
    x = _float_array("x", x, min_ndim=1)
    C = x.shape[-1]
    dy = _like("dy", dy, x.shape, x.dtype)
    weight = _like("weight", weight, (C,), x.dtype)
    mean = _like("mean", mean, x.shape[:-1], "float64")
    rstd = _like("rstd", rstd, x.shape[:-1], "float64")
    x2, _ = _rows(x)
    dx, dweight, dbias = pick("layer_norm", x).layer_norm_backward(
        dy.reshape(x2.shape), x2, weight, mean.reshape(-1), rstd.reshape(-1))
    return dx.reshape(x.shape), dweight, dbias


def _bias(bias, x):
    """None, or the bias checked as (C,) for x (..., C), x's dtype."""
    if bias is None:
        return None
    if x.ndim == 0:
        raise ValueError("bias: x must have at least one dimension to add a bias over its last")
    return _like("bias", bias, x.shape[-1:], x.dtype)


def gelu_forward(x, bias=None):
    """gelu(z) = z * (1 + erf(z / sqrt 2)) / 2 of z = x (+ bias over the last dim), elementwise."""
    x = _float_array("x", x)
    return pick("layer_norm", x).gelu_forward(x, _bias(bias, x))


def gelu_backward(dy, x, bias=None):
    """dx = dy * gelu'(z), gelu'(z) = Phi(z) + z * phi(z), z = x (+ bias). (The bias's gradient is
    the sum of dx over the leading dimensions: the caller's.)"""
    x = _float_array("x", x)
    dy = _like("dy", dy, x.shape, x.dtype)
    return pick("layer_norm", x).gelu_backward(dy, x, _bias(bias, x))


def quick_gelu_forward(x, bias=None):
    """quick_gelu(z) = z * sigmoid(1.702 z), z = x (+ bias), elementwise (CLIP's original activation)."""
    x = _float_array("x", x)
    return pick("layer_norm", x).quick_gelu_forward(x, _bias(bias, x))


def quick_gelu_backward(dy, x, bias=None):
    """dx = dy * (s + 1.702 z s (1 - s)), s = sigmoid(1.702 z), z = x (+ bias)."""
    x = _float_array("x", x)
    dy = _like("dy", dy, x.shape, x.dtype)
    return pick("layer_norm", x).quick_gelu_backward(dy, x, _bias(bias, x))
