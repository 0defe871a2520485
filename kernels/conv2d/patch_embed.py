"""The patch-embedding fast path: a convolution whose kernel equals its stride, with no padding.

A ViT cuts the image into non-overlapping P x P patches and projects each one linearly; as a
convolution that is kernel = stride = P, padding 0. The patches do not overlap, so im2col copies
each pixel exactly once: the columns are only a reshape and a transpose of x,

    x (N, C, OH*KH, OW*KW) -> (N, C, OH, KH, OW, KW) -> cols (C*KH*KW, N*OH*OW)

(one copy, in the final reshape; pixels past the last whole patch are cut off, as conv2d does),
and the layer is one GEMM, y = w (OC, C*KH*KW) @ cols. Backward:

    dw = dy (OC, N*OH*OW) @ cols^T,   dx = (w^T @ dy) reshaped back to the image (0 where cut off)

The same code runs on NumPy and CuPy arrays (`xp`), so on a GPU the GEMM is cuBLAS's. The
dispatch in __init__.py takes this path whenever `is_patch_embedding(w, stride, padding)`;
tests/kernels/test_conv2d.py checks it against reference.py, also on images whose size is not a
multiple of the patch.
"""
from miniclip.backend import get_array_module

from . import checks


def is_patch_embedding(w, stride, padding):
    """True when the kernel equals the stride and there is no padding."""
    return checks.pair(stride, "stride") == tuple(w.shape[2:]) and checks.pair(padding, "padding") == (0, 0)


def _patch_columns(x, KH, KW):
    """cols (C*KH*KW, N*OH*OW) of x (N, C, H, W): every patch flattened into a column."""
    N, C, H, W = x.shape
    OH, OW = H // KH, W // KW
    patches = x[:, :, :OH * KH, :OW * KW].reshape(N, C, OH, KH, OW, KW)    # a view
    return patches.transpose(1, 3, 5, 0, 2, 4).reshape(C * KH * KW, N * OH * OW)   # the one copy


def conv2d_forward(x, w, b, stride, padding):
    """conv2d with kernel == stride, padding 0: y (N, OC, OH, OW)."""
    x, w, b, stride, padding = checks.forward_inputs(x, w, b, stride, padding)
    if not is_patch_embedding(w, stride, padding):
        raise ValueError(f"patch_embed: needs kernel == stride and padding 0, got kernel {w.shape[2:]}, "
                         f"stride {stride}, padding {padding}")
    xp = get_array_module(x)
    N, (OC, C, KH, KW) = x.shape[0], w.shape
    OH, OW = x.shape[2] // KH, x.shape[3] // KW
    y = w.reshape(OC, -1) @ _patch_columns(x, KH, KW)             # (OC, N*OH*OW)
    y = xp.ascontiguousarray(y.reshape(OC, N, OH, OW).transpose(1, 0, 2, 3))     # (N, OC, OH, OW)
    if b is not None:
        y += b[:, None, None]
    return y


def conv2d_backward(dy, x, w, stride, padding):
    """(dx, dw, db) of the patch-embedding convolution."""
    dy, x, w, stride, padding = checks.backward_inputs(dy, x, w, stride, padding)
    if not is_patch_embedding(w, stride, padding):
        raise ValueError(f"patch_embed: needs kernel == stride and padding 0, got kernel {w.shape[2:]}, "
                         f"stride {stride}, padding {padding}")
    xp = get_array_module(x)
    (N, C, H, W), (OC, _, KH, KW), (OH, OW) = x.shape, w.shape, dy.shape[2:]
    dy_rows = dy.transpose(1, 0, 2, 3).reshape(OC, -1)            # (OC, N*OH*OW), a copy
    dw = (dy_rows @ _patch_columns(x, KH, KW).T).reshape(w.shape)
    dcols = w.reshape(OC, -1).T @ dy_rows                         # (C*KH*KW, N*OH*OW)
    dx_patches = dcols.reshape(C, KH, KW, N, OH, OW).transpose(3, 0, 4, 1, 5, 2).reshape(
        N, C, OH * KH, OW * KW)                                   # (N, C, OH*KH, OW*KW), a copy
    if dx_patches.shape == x.shape:
        return dx_patches, dw, dy.sum(axis=(0, 2, 3))
    dx = xp.zeros_like(x)                                         # pixels past the last whole patch get 0
    dx[:, :, :OH * KH, :OW * KW] = dx_patches
    return dx, dw, dy.sum(axis=(0, 2, 3))
