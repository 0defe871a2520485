"""2-D convolution (cross-correlation, as in every deep-learning library), NCHW: the definition.

With the input zero-padded by (ph, pw), for output pixel (oh, ow):

    y[n, o, oh, ow] = b[o] + sum_{c, i, j} w[o, c, i, j] * x_pad[n, c, oh*sh + i, ow*sw + j]

This version loops over the KH * KW kernel taps: for tap (i, j) the input pixels it touches form
a strided window of x_pad, and the tap contributes window . w[:, :, i, j] to every output pixel.
The backward walks the same windows:

    dw[:, :, i, j] = sum_{n, oh, ow} dy * window           (one contraction per tap)
    dx_pad[window of tap (i, j)] += w[:, :, i, j]^T dy     (then the padding is cut off)
    db = dy summed over n, oh, ow

No im2col, so it is independent of the fast versions it checks. It is written against `xp`
(NumPy or CuPy) and runs in float64 as well as float32; tests/kernels/test_conv2d.py checks it
against central finite differences and against torch.nn.functional.conv2d.
"""
from miniclip.backend import get_array_module

from . import checks


def _windows(KH, KW, stride, OH, OW):
    """(i, j, window) for each kernel tap; window = x_pad's pixels under tap (i, j): (N, C, OH, OW)."""
    sh, sw = stride
    for i in range(KH):
        for j in range(KW):
            yield i, j, (slice(None), slice(None), slice(i, i + sh * OH, sh), slice(j, j + sw * OW, sw))


def conv2d_forward(x, w, b, stride, padding):
    """y = conv2d(x, w) + b for x (N, C, H, W), w (OC, C, KH, KW), b (OC,) or None; y (N, OC, OH, OW)."""
    x, w, b, stride, padding = checks.forward_inputs(x, w, b, stride, padding)
    xp = get_array_module(x)
    (N, C, H, W), (OC, _, KH, KW), (ph, pw) = x.shape, w.shape, padding
    OH, OW = checks.output_size(H, W, KH, KW, stride, padding)
    x_pad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))          # (N, C, H + 2ph, W + 2pw)
    y = xp.zeros((N, OC, OH, OW), x.dtype)
    for i, j, window in _windows(KH, KW, stride, OH, OW):
        y += xp.einsum("nchw,oc->nohw", x_pad[window], w[:, :, i, j])
    if b is not None:
        y += b[:, None, None]
    return y


def conv2d_backward(dy, x, w, stride, padding, need_dx=True):
    """Gradients (dx, dw, db) of conv2d_forward for the upstream gradient dy (N, OC, OH, OW).

    db is returned even for a convolution without bias (the caller drops it); dx is None unless
    need_dx.
    """
    dy, x, w, stride, padding = checks.backward_inputs(dy, x, w, stride, padding)
    xp = get_array_module(x)
    (N, C, H, W), (OC, _, KH, KW), (ph, pw) = x.shape, w.shape, padding
    OH, OW = dy.shape[2:]
    x_pad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dx_pad = xp.zeros_like(x_pad)                                     # (N, C, H + 2ph, W + 2pw)
    dw = xp.empty_like(w)                                             # (OC, C, KH, KW)
    for i, j, window in _windows(KH, KW, stride, OH, OW):
        dw[:, :, i, j] = xp.einsum("nohw,nchw->oc", dy, x_pad[window])
        if need_dx:
            dx_pad[window] += xp.einsum("nohw,oc->nchw", dy, w[:, :, i, j])
    dx = xp.ascontiguousarray(dx_pad[:, :, ph:ph + H, pw:pw + W]) if need_dx else None
    db = dy.sum(axis=(0, 2, 3))                                       # (OC,)
    return dx, dw, db
