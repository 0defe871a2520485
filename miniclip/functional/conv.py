"""2-D convolution and pooling on NCHW images: conv2d, unfold, avg_pool2d, max_pool2d, adaptive_avg_pool2d.

A convolution is a matrix product in disguise. im2col copies every receptive field (the
C x kh x kw input values one output pixel sees) into a column:

    cols[b, c, i, j, oh, ow] = x_pad[b, c, oh * stride + i * dilation, ow * stride + j * dilation]

and then, with K = C kh kw and L = Ho Wo output positions,

    y[b] = W (O, K) @ cols[b] (K, L) + bias          Ho = (H + 2 padding - dilation (kh - 1) - 1) // stride + 1

Backward: dW = sum_b dy[b] @ cols[b]^T, dcols = W^T @ dy[b], and dx = col2im(dcols), the adjoint
of im2col: every column entry is added back onto the input pixel it was copied from (a pixel in
several receptive fields collects several contributions); gradients landing on padding are dropped.

Pooling reuses the columns: avg_pool2d and max_pool2d are unfold (im2col as an op, backward
col2im) followed by the mean or max primitive over each window. adaptive_avg_pool2d is linear and
separable: y = P_h @ x @ P_w^T with averaging matrices P built from torch's bins.

conv2d and unfold are Functions with hand-derived backwards; the pools are composed. conv2d
runs the kernels of miniclip.kernels.conv2d (im2col in Numba + one BLAS GEMM on the CPU, the
patch-embedding reshape + GEMM when kernel == stride and padding is 0) through FusedConv2d; the
Conv2d Function here stays as their test oracle and takes dilation > 1 and mixed dtypes, which
the kernels do not. Checked by tests/functional/test_conv.py: float64 gradcheck (stride 2,
padding 1, odd sizes, a patch embedding), the fused against Conv2d in both kernel modes, and
torch.nn.functional on the same inputs (values and gradients), and the channel-mismatch error.
"""
import numpy as np

from miniclip.backend import get_array_module, to_device
from miniclip.kernels import conv2d as conv2d_kernels
from miniclip.ops import matmul, transpose
from miniclip.tensor import Function, Tensor, as_tensor


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def _output_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def im2col(x, kernel_size, stride, padding, dilation, pad_value=0.0):
    """x (B, C, H, W) -> cols (B, C, kh, kw, Ho, Wo), one strided copy per kernel offset (i, j)."""
    xp = get_array_module(x)
    B, C, H, W = x.shape
    kh, kw = kernel_size
    Ho = _output_size(H, kh, stride[0], padding[0], dilation[0])
    Wo = _output_size(W, kw, stride[1], padding[1], dilation[1])
    x_pad = xp.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2),
                   constant_values=pad_value)                            # (B, C, H + 2ph, W + 2pw)
    cols = xp.empty((B, C, kh, kw, Ho, Wo), dtype=x.dtype)
    for i in range(kh):
        top = i * dilation[0]
        for j in range(kw):
            left = j * dilation[1]
            cols[:, :, i, j] = x_pad[:, :, top:top + stride[0] * Ho:stride[0],
                                     left:left + stride[1] * Wo:stride[1]]   # (B, C, Ho, Wo)
    return cols


def col2im(cols, x_shape, stride, padding, dilation):
    """The adjoint of im2col: cols (B, C, kh, kw, Ho, Wo) summed back into an array of x_shape."""
    xp = get_array_module(cols)
    B, C, H, W = x_shape
    _, _, kh, kw, Ho, Wo = cols.shape
    dx_pad = xp.zeros((B, C, H + 2 * padding[0], W + 2 * padding[1]), dtype=cols.dtype)
    for i in range(kh):
        top = i * dilation[0]
        for j in range(kw):
            left = j * dilation[1]
            # one kernel offset touches each pixel at most once, so += on the strided view is safe
            dx_pad[:, :, top:top + stride[0] * Ho:stride[0],
                   left:left + stride[1] * Wo:stride[1]] += cols[:, :, i, j]
    return dx_pad[:, :, padding[0]:padding[0] + H, padding[1]:padding[1] + W]   # (B, C, H, W)


class Conv2d(Function):
    """y = W @ im2col(x) + bias; backward as in the module docstring (dW, then dx by col2im)."""

    def forward(self, x, weight, bias, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
        xp = get_array_module(x)
        B, O = x.shape[0], weight.shape[0]
        self.x_shape, self.weight = x.shape, weight
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.cols = im2col(x, weight.shape[2:], stride, padding, dilation)   # (B, C, kh, kw, Ho, Wo)
        Ho, Wo = self.cols.shape[-2:]
        cols = self.cols.reshape(B, -1, Ho * Wo)                         # (B, K, L)
        y = xp.matmul(weight.reshape(O, -1), cols)                       # (B, O, L)
        return y.reshape(B, O, Ho, Wo) + bias.reshape(1, O, 1, 1)

    def backward(self, dy):
        xp = get_array_module(dy)
        B, O, Ho, Wo = dy.shape
        dy = dy.reshape(B, O, Ho * Wo)                                   # (B, O, L)
        cols = self.cols.reshape(B, -1, Ho * Wo)                         # (B, K, L)
        dx = dw = db = None
        if self.inputs[0].requires_grad:
            dcols = xp.matmul(self.weight.reshape(O, -1).T, dy)           # (B, K, L)
            dx = col2im(dcols.reshape(self.cols.shape), self.x_shape, self.stride, self.padding,
                        self.dilation)
        if self.inputs[1].requires_grad:
            dw = xp.tensordot(dy, cols, axes=([0, 2], [0, 2])).reshape(self.weight.shape)  # (O, C, kh, kw)
        if self.inputs[2].requires_grad:
            db = dy.sum(axis=(0, 2))                                     # (O,)
        return dx, dw, db


class FusedConv2d(Function):
    """conv2d by miniclip.kernels.conv2d: inputs (x, weight) or (x, weight, bias)."""

    def forward(self, x, weight, bias=None, stride=(1, 1), padding=(0, 0)):
        self.x, self.weight, self.stride, self.padding = x, weight, stride, padding
        return conv2d_kernels.conv2d_forward(x, weight, bias, stride, padding)   # (B, O, Ho, Wo)

    def backward(self, dy):
        dx, dw, db = conv2d_kernels.conv2d_backward(dy, self.x, self.weight, self.stride, self.padding,
                                                    need_dx=self.inputs[0].requires_grad)
        return (dx, dw, db)[:len(self.inputs)]


class Unfold(Function):
    """im2col as an op, in torch's layout (B, C kh kw, L); its backward is col2im. pad_value is
    what the padding reads as: 0 for convolution and average pooling, -inf for max pooling."""

    def forward(self, x, kernel_size=(1, 1), stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                pad_value=0.0):
        self.x_shape = x.shape
        self.stride, self.padding, self.dilation = stride, padding, dilation
        cols = im2col(x, kernel_size, stride, padding, dilation, pad_value)   # (B, C, kh, kw, Ho, Wo)
        self.cols_shape = cols.shape
        B, C, kh, kw, Ho, Wo = cols.shape
        return cols.reshape(B, C * kh * kw, Ho * Wo)

    def backward(self, dy):
        return col2im(dy.reshape(self.cols_shape), self.x_shape, self.stride, self.padding,
                      self.dilation)


def _check_image(op, x):
    if x.ndim != 4:
        raise ValueError(f"{op}: expected an input of shape (B, C, H, W), got {x.shape}")


def _check_output_size(op, x, kernel_size, stride, padding, dilation):
    H, W = x.shape[2:]
    Ho = _output_size(H, kernel_size[0], stride[0], padding[0], dilation[0])
    Wo = _output_size(W, kernel_size[1], stride[1], padding[1], dilation[1])
    if Ho < 1 or Wo < 1:
        raise ValueError(f"{op}: kernel {kernel_size} (dilation {dilation}) does not fit the input "
                         f"{x.shape} with padding {padding}: the output would be {Ho} x {Wo}")
    return Ho, Wo


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """torch.nn.functional.conv2d (without groups): x (B, C, H, W), weight (O, C, kh, kw),
    bias (O,) -> (B, O, Ho, Wo). A missing bias acts as zeros (a constant, no gradient).
    FusedConv2d runs when dilation is 1 and x, weight, bias share a float dtype, else Conv2d."""
    x, weight = as_tensor(x), as_tensor(weight)
    _check_image("conv2d", x)
    if weight.ndim != 4 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"conv2d: weight of shape {weight.shape} must be (out_channels, {x.shape[1]}, kh, kw) "
                         f"for an input of shape {x.shape} with {x.shape[1]} channels")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"conv2d: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    _check_output_size("conv2d", x, weight.shape[2:], stride, padding, dilation)
    dtypes = {t.dtype for t in (x, weight, bias) if t is not None}
    if dilation == (1, 1) and len(dtypes) == 1 and x.dtype.name in ("float32", "float64") and x.size:
        inputs = (x, weight) if bias is None else (x, weight, bias)
        return FusedConv2d.apply(*inputs, stride=stride, padding=padding)
    if bias is None:
        bias = Tensor(get_array_module(x.data).zeros(weight.shape[0], dtype=x.dtype))
    return Conv2d.apply(x, weight, bias, stride=stride, padding=padding, dilation=dilation)


def unfold(x, kernel_size, dilation=1, padding=0, stride=1):
    """torch.nn.functional.unfold: every receptive field as a column, (B, C, H, W) -> (B, C kh kw, L)."""
    x = as_tensor(x)
    _check_image("unfold", x)
    kernel_size, stride, padding, dilation = _pair(kernel_size), _pair(stride), _pair(padding), _pair(dilation)
    _check_output_size("unfold", x, kernel_size, stride, padding, dilation)
    return Unfold.apply(x, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation)


def _pool_windows(op, x, kernel_size, stride, padding, dilation, pad_value):
    """The pooling windows of x as (B, C, kh kw, Ho, Wo), padded with pad_value."""
    x = as_tensor(x)
    _check_image(op, x)
    kernel_size = _pair(kernel_size)
    stride = kernel_size if stride is None else _pair(stride)
    padding, dilation = _pair(padding), _pair(dilation)
    if any(2 * p > k for p, k in zip(padding, kernel_size)):
        raise ValueError(f"{op}: padding {padding} must be at most half the kernel size {kernel_size}")
    Ho, Wo = _check_output_size(op, x, kernel_size, stride, padding, dilation)
    B, C = x.shape[:2]
    cols = Unfold.apply(x, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                        pad_value=pad_value)                             # (B, C kh kw, L)
    return cols.reshape(B, C, kernel_size[0] * kernel_size[1], Ho, Wo)   # (B, C, kh kw, Ho, Wo)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """torch.nn.functional.avg_pool2d (count_include_pad=True): the mean of each window, padding
    counted as zeros. stride defaults to kernel_size."""
    return _pool_windows("avg_pool2d", x, kernel_size, stride, padding, 1, 0.0).mean(2)   # (B, C, Ho, Wo)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1):
    """torch.nn.functional.max_pool2d: the maximum of each window (padding is -inf, never chosen).

    Gradient: dy goes to the window's maximum. When several elements of a window tie for the
    maximum, the gradient is shared equally among them (the max primitive's rule); torch gives
    all of it to the first one. An element that is the maximum of several overlapping windows
    collects the gradient of each.
    """
    windows = _pool_windows("max_pool2d", x, kernel_size, stride, padding, dilation, -np.inf)
    return windows.max(2)                                                # (B, C, Ho, Wo)


def _adaptive_pool_matrix(n_in, n_out, dtype, device):
    """P (n_out, n_in): row i averages bin i = [floor(i n_in / n_out), ceil((i + 1) n_in / n_out))."""
    P = np.zeros((n_out, n_in), dtype=dtype)
    for i in range(n_out):
        start = (i * n_in) // n_out
        end = ((i + 1) * n_in + n_out - 1) // n_out                      # ceil((i + 1) n_in / n_out)
        P[i, start:end] = 1 / (end - start)
    return Tensor(to_device(P, device))


def adaptive_avg_pool2d(x, output_size):
    """torch.nn.functional.adaptive_avg_pool2d: average pooling to output_size (Ho, Wo) (an int
    for both; None keeps that dimension), y = P_h @ x @ P_w^T."""
    x = as_tensor(x)
    _check_image("adaptive_avg_pool2d", x)
    H, W = x.shape[2:]
    Ho, Wo = _pair(output_size)
    Ho, Wo = H if Ho is None else Ho, W if Wo is None else Wo
    if Ho < 1 or Wo < 1:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be positive, got {output_size}")
    P_h = _adaptive_pool_matrix(H, Ho, x.dtype, x.device)                # (Ho, H)
    P_w = _adaptive_pool_matrix(W, Wo, x.dtype, x.device)                # (Wo, W)
    return matmul(matmul(P_h, x), transpose(P_w, 0, 1))                  # (B, C, Ho, Wo)
