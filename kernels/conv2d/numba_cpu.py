"""conv2d on the CPU as im2col + one GEMM: Numba copies the patches, NumPy's BLAS multiplies.

im2col lays every patch the kernel sees out as a column:

    cols[(c, i, j), (n, oh, ow)] = x_pad[n, c, oh*sh + i, ow*sw + j]     (C*KH*KW, N*OH*OW)

so the whole convolution is one matrix product, y = w (OC, C*KH*KW) @ cols, which BLAS runs
near the machine's peak. The backward is two more products and the transposed copy, col2im:

    dw    = dy (OC, N*OH*OW) @ cols^T
    dcols = w^T @ dy                    (C*KH*KW, N*OH*OW)
    dx    = col2im(dcols): each column's entries added back to the pixels they were copied from

Putting (n, oh, ow) in the columns makes each of these a single 2-D GEMM (no per-image loop);
the price is a transposed copy of y and dy, (OC, N, ...) <-> (N, OC, ...), which are KH*KW
times smaller than cols.

im2col and col2im are serial loops, on purpose. For 8 x 64 x 28 x 28 with a 3x3 kernel, prange
over 2 cores halves their own time (im2col 0.7 against 1.3 ms), but the whole layer got slower
(forward + backward 40 against 28-31 ms, measured): after a parallel region Numba's OpenMP
threads keep spinning for a while and take the cores from the OpenBLAS threads of the GEMM
that follows.

Checked against reference.py (forward and backward, float32 and float64, stride, padding,
odd sizes) in tests/kernels/test_conv2d.py.
"""
import numpy as np
from numba import njit

from . import checks


@njit(cache=True)
def _im2col(x, KH, KW, sh, sw, ph, pw, OH, OW, cols):
    N, C, H, W = x.shape
    for row in range(C * KH * KW):
        c, i, j = row // (KH * KW), (row // KW) % KH, row % KW
        for n in range(N):
            for oh in range(OH):
                h = oh * sh + i - ph                        # the input row this tap reads
                out = (n * OH + oh) * OW
                for ow in range(OW):
                    w_ = ow * sw + j - pw
                    inside = 0 <= h < H and 0 <= w_ < W     # outside: a padding zero
                    cols[row, out + ow] = x[n, c, h, w_] if inside else 0


@njit(cache=True)
def _col2im(dcols, KH, KW, sh, sw, ph, pw, OH, OW, dx):
    N, C, H, W = dx.shape
    dx[...] = 0
    for c in range(C):
        for i in range(KH):
            for j in range(KW):
                row = (c * KH + i) * KW + j
                for n in range(N):
                    for oh in range(OH):
                        h = oh * sh + i - ph
                        if not 0 <= h < H:
                            continue
                        out = (n * OH + oh) * OW
                        for ow in range(OW):
                            w_ = ow * sw + j - pw
                            if 0 <= w_ < W:
                                dx[n, c, h, w_] += dcols[row, out + ow]


def im2col(x, KH, KW, stride, padding):
    """cols (C*KH*KW, N*OH*OW) of x (N, C, H, W)."""
    N, C, H, W = x.shape
    OH, OW = checks.output_size(H, W, KH, KW, stride, padding)
    cols = np.empty((C * KH * KW, N * OH * OW), x.dtype)
    _im2col(x, KH, KW, *stride, *padding, OH, OW, cols)
    return cols


def conv2d_forward(x, w, b, stride, padding):
    """y (N, OC, OH, OW) = conv2d(x, w) + b, as w @ im2col(x)."""
    x, w, b, stride, padding = checks.forward_inputs(x, w, b, stride, padding)
    N, (OC, C, KH, KW) = x.shape[0], w.shape
    OH, OW = checks.output_size(x.shape[2], x.shape[3], KH, KW, stride, padding)
    cols = im2col(x, KH, KW, stride, padding)                   # (C*KH*KW, N*OH*OW)
    y = w.reshape(OC, C * KH * KW) @ cols                       # (OC, N*OH*OW)
    y = np.ascontiguousarray(y.reshape(OC, N, OH, OW).transpose(1, 0, 2, 3))   # (N, OC, OH, OW)
    if b is not None:
        y += b[:, None, None]
    return y


def conv2d_backward(dy, x, w, stride, padding, need_dx=True):
    """(dx, dw, db) of conv2d_forward for the upstream gradient dy (N, OC, OH, OW); dx None
    unless need_dx."""
    dy, x, w, stride, padding = checks.backward_inputs(dy, x, w, stride, padding)
    OC, C, KH, KW = w.shape
    OH, OW = dy.shape[2:]
    dy_rows = dy.transpose(1, 0, 2, 3).reshape(OC, -1)          # (OC, N*OH*OW), a copy
    cols = im2col(x, KH, KW, stride, padding)                   # recomputed, not kept: KH*KW times the size of x
    dw = (dy_rows @ cols.T).reshape(w.shape)                    # (OC, C, KH, KW)
    if not need_dx:
        return None, dw, dy.sum(axis=(0, 2, 3))
    dcols = w.reshape(OC, -1).T @ dy_rows                       # (C*KH*KW, N*OH*OW)
    dx = np.empty_like(x)
    _col2im(dcols, KH, KW, *stride, *padding, OH, OW, dx)
    return dx, dw, dy.sum(axis=(0, 2, 3))
