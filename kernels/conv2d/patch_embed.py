"""The patch-embedding fast path: a convolution whose kernel equals its stride, with no padding.

A ViT cuts the image into non-overlapping P x P patches and projects each one linearly; as a
convolution that is kernel = stride = P, padding 0. The patches do not overlap, so im2col copies
each pixel exactly once: the rows are only a reshape and a transpose of x,

    x (N, C, OH*KH, OW*KW) -> (N, C, OH, KH, OW, KW) -> rows (N*OH*OW, C*KH*KW)

(one copy, in the final reshape; pixels past the last whole patch are cut off, as conv2d does),
and the layer is one GEMM, y = rows @ w (OC, C*KH*KW)^T, a row of OC channels per patch. Backward:

    dw = dy^T (OC, N*OH*OW) @ rows,   db = sum of dy's rows,
    dx = (dy @ w) reshaped back to the image (0 where cut off), only when the input needs it

y is returned as (N, OC, OH, OW), as conv2d's, but it is a view of the GEMM's (N, OH, OW, OC)
output ("channels last"): that is the layout a ViT wants next, (N, OH*OW, OC) tokens of OC
features, so its flatten and transpose are free views, and the gradient coming back in that
layout needs no copy either. (Computing (OC, N*OH*OW) as other convolutions do, transposing it to
NCHW and the ViT transposing it back cost two copies each way: 59 of 3800 ms of a tiny-vit-s
batch-256 step, with the unneeded dx.)

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


def _patch_rows(x, KH, KW):
    """rows (N*OH*OW, C*KH*KW) of x (N, C, H, W): every patch flattened into a row."""
    N, C, H, W = x.shape
    OH, OW = H // KH, W // KW
    patches = x[:, :, :OH * KH, :OW * KW].reshape(N, C, OH, KH, OW, KW)    # a view
    return patches.transpose(0, 2, 4, 1, 3, 5).reshape(N * OH * OW, C * KH * KW)   # the one copy


def _check(w, stride, padding):
    if not is_patch_embedding(w, stride, padding):
        raise ValueError(f"patch_embed: needs kernel == stride and padding 0, got kernel {w.shape[2:]}, "
                         f"stride {stride}, padding {padding}")


def conv2d_forward(x, w, b, stride, padding):
    """conv2d with kernel == stride, padding 0: y (N, OC, OH, OW), a view of channels-last memory."""
    x, w, b, stride, padding = checks.forward_inputs(x, w, b, stride, padding)
    _check(w, stride, padding)
    N, (OC, C, KH, KW) = x.shape[0], w.shape
    OH, OW = x.shape[2] // KH, x.shape[3] // KW
    y = _patch_rows(x, KH, KW) @ w.reshape(OC, -1).T             # (N*OH*OW, OC)
    if b is not None:
        y += b
    return y.reshape(N, OH, OW, OC).transpose(0, 3, 1, 2)        # (N, OC, OH, OW)


def conv2d_backward(dy, x, w, stride, padding, need_dx=True):
    """(dx, dw, db) of the patch-embedding convolution; dx None unless need_dx."""
    dy, x, w, stride, padding = checks.backward_inputs(dy, x, w, stride, padding, any_layout=True)
    _check(w, stride, padding)
    xp = get_array_module(x)
    (N, C, H, W), (OC, _, KH, KW), (OH, OW) = x.shape, w.shape, dy.shape[2:]
    dy_rows = dy.transpose(0, 2, 3, 1).reshape(-1, OC)           # (N*OH*OW, OC): a view when channels last
    dw = (dy_rows.T @ _patch_rows(x, KH, KW)).reshape(w.shape)   # (OC, C, KH, KW)
    db = dy_rows.sum(axis=0)                                     # (OC,)
    if not need_dx:
        return None, dw, db
    drows = dy_rows @ w.reshape(OC, -1)                          # (N*OH*OW, C*KH*KW)
    dx_patches = drows.reshape(N, OH, OW, C, KH, KW).transpose(0, 3, 1, 4, 2, 5).reshape(
        N, C, OH * KH, OW * KW)                                  # (N, C, OH*KH, OW*KW), a copy
    if dx_patches.shape == x.shape:
        return dx_patches, dw, db
    dx = xp.zeros_like(x)                                        # pixels past the last whole patch get 0
    dx[:, :, :OH * KH, :OW * KW] = dx_patches
    return dx, dw, db
