"""2-D convolution (NCHW), forward and backward, with stride and padding.

    y = conv2d_forward(x, w, b, stride, padding)              # b may be None
    dx, dw, db = conv2d_backward(dy, x, w, stride, padding, need_dx=True)

x is (N, C, H, W), w (OC, C, KH, KW), b (OC,) or None, y and dy (N, OC, OH, OW) with
OH = (H + 2 ph - KH) // sh + 1; stride and padding are an int or a (height, width) pair;
float32 or float64. db is returned even when the convolution has no bias; dx is None when
need_dx=False (an image batch needs no gradient: its GEMM and col2im are then skipped).

Implementations (see each file's docstring):
    reference.py     one strided window per kernel tap, in NumPy/CuPy: the definition
    numba_cpu.py     im2col and col2im in @njit, the GEMM by NumPy's BLAS
    numba_cuda.py    numba.cuda kernels, v1 (direct) and v2 (im2col + GEMM)
    patch_embed.py   kernel == stride, padding 0 (a ViT's patch embedding): a reshape and one GEMM

Which one runs: the reference when miniclip.kernels.mode() == "reference"; otherwise the patch
path when it applies (on either device), else numba_cpu for NumPy arrays and the newest
numba_cuda version for CuPy arrays.
"""
from .. import mode, pick
from . import patch_embed


def _implementation(x, w, stride, padding):
    if mode() == "fast" and w.ndim == 4 and patch_embed.is_patch_embedding(w, stride, padding):
        return patch_embed
    return pick("conv2d", x)


def conv2d_forward(x, w, b, stride, padding):
    """y (N, OC, OH, OW) = conv2d(x, w) + b."""
    return _implementation(x, w, stride, padding).conv2d_forward(x, w, b, stride, padding)


def conv2d_backward(dy, x, w, stride, padding, need_dx=True):
    """(dx, dw, db): the gradients of conv2d_forward for the upstream gradient dy (dx None
    unless need_dx)."""
    return _implementation(x, w, stride, padding).conv2d_backward(dy, x, w, stride, padding, need_dx)
