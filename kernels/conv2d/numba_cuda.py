"""conv2d in numba.cuda: every version kept and numbered (llm.c style), each tested against reference.py.

The math is in reference.py (direct form) and numba_cpu.py (im2col form).

Versions
  v1  direct: one thread per output pixel y[n, o, oh, ow] sums w * x over (c, i, j) straight from
      global memory. Backward: one thread per input pixel dx[n, c, h, w] gathers from every
      output pixel whose window covers it (no atomics), one thread per weight dw[o, c, i, j]
      sums over (n, oh, ow). Each x is re-read by every output channel, so this is slow.
  v2  im2col + GEMM: a kernel copies the patches into cols (C*KH*KW, N*OH*OW), one thread per
      entry, consecutive threads writing consecutive columns (coalesced), and the GEMM
      w @ cols runs in the array library (cuBLAS through CuPy on a GPU). Backward: dw and
      dcols are GEMMs too, and col2im gathers: one thread per input pixel sums the entries of
      dcols copied from it, so no two threads write the same pixel.

db = dy summed over (n, oh, ow) is the array library's reduction in both versions. The kernels
are built once per dtype by `_kernels(dtype)` (the accumulators start from a zero of that dtype,
so float32 kernels do float32 arithmetic) and cached.
"""
import functools
from types import SimpleNamespace

from numba import cuda

from miniclip.backend import get_array_module

from ..cuda_launch import launch
from . import checks

THREADS_PER_BLOCK = 128


@functools.lru_cache(maxsize=None)
def _kernels(dtype):
    ZERO = dtype.type(0)

    # --- v1: direct ------------------------------------------------------------------------

    @cuda.jit
    def forward_v1(x, w, b, sh, sw, ph, pw, y):
        N, C, H, W = x.shape
        OC, _, KH, KW = w.shape
        _, _, OH, OW = y.shape
        idx = cuda.grid(1)
        if idx >= N * OC * OH * OW:
            return
        n, o, oh, ow = idx // (OC * OH * OW), (idx // (OH * OW)) % OC, (idx // OW) % OH, idx % OW
        total = b[o]
        for c in range(C):
            for i in range(KH):
                h = oh * sh + i - ph
                if 0 <= h < H:
                    for j in range(KW):
                        w_ = ow * sw + j - pw
                        if 0 <= w_ < W:
                            total += w[o, c, i, j] * x[n, c, h, w_]
        y[n, o, oh, ow] = total

    @cuda.jit
    def backward_dx_v1(dy, w, sh, sw, ph, pw, dx):
        N, C, H, W = dx.shape
        OC, _, KH, KW = w.shape
        _, _, OH, OW = dy.shape
        idx = cuda.grid(1)
        if idx >= N * C * H * W:
            return
        n, c, h, w_ = idx // (C * H * W), (idx // (H * W)) % C, (idx // W) % H, idx % W
        total = ZERO
        for i in range(KH):
            oh_sh = h + ph - i                    # tap i reads row h from output row oh = oh_sh / sh
            if oh_sh < 0 or oh_sh % sh != 0 or oh_sh // sh >= OH:
                continue
            for j in range(KW):
                ow_sw = w_ + pw - j
                if ow_sw < 0 or ow_sw % sw != 0 or ow_sw // sw >= OW:
                    continue
                for o in range(OC):
                    total += w[o, c, i, j] * dy[n, o, oh_sh // sh, ow_sw // sw]
        dx[n, c, h, w_] = total

    @cuda.jit
    def backward_dw_v1(dy, x, sh, sw, ph, pw, dw):
        N, C, H, W = x.shape
        OC, _, KH, KW = dw.shape
        _, _, OH, OW = dy.shape
        idx = cuda.grid(1)
        if idx >= OC * C * KH * KW:
            return
        o, c, i, j = idx // (C * KH * KW), (idx // (KH * KW)) % C, (idx // KW) % KH, idx % KW
        total = ZERO
        for n in range(N):
            for oh in range(OH):
                h = oh * sh + i - ph
                if 0 <= h < H:
                    for ow in range(OW):
                        w_ = ow * sw + j - pw
                        if 0 <= w_ < W:
                            total += dy[n, o, oh, ow] * x[n, c, h, w_]
        dw[o, c, i, j] = total

    # --- v2: im2col + GEMM -------------------------------------------------------------------

    @cuda.jit
    def im2col_v2(x, KH, KW, sh, sw, ph, pw, OH, OW, cols):
        N, C, H, W = x.shape
        n_rows, n_cols = cols.shape
        idx = cuda.grid(1)
        if idx >= n_rows * n_cols:
            return
        row, col = idx // n_cols, idx % n_cols
        c, i, j = row // (KH * KW), (row // KW) % KH, row % KW
        n, oh, ow = col // (OH * OW), (col // OW) % OH, col % OW
        h = oh * sh + i - ph
        w_ = ow * sw + j - pw
        cols[row, col] = x[n, c, h, w_] if 0 <= h < H and 0 <= w_ < W else ZERO

    @cuda.jit
    def col2im_v2(dcols, KH, KW, sh, sw, ph, pw, OH, OW, dx):
        N, C, H, W = dx.shape
        idx = cuda.grid(1)
        if idx >= N * C * H * W:
            return
        n, c, h, w_ = idx // (C * H * W), (idx // (H * W)) % C, (idx // W) % H, idx % W
        total = ZERO
        for i in range(KH):
            oh_sh = h + ph - i
            if oh_sh < 0 or oh_sh % sh != 0 or oh_sh // sh >= OH:
                continue
            for j in range(KW):
                ow_sw = w_ + pw - j
                if ow_sw < 0 or ow_sw % sw != 0 or ow_sw // sw >= OW:
                    continue
                total += dcols[(c * KH + i) * KW + j, (n * OH + oh_sh // sh) * OW + ow_sw // sw]
        dx[n, c, h, w_] = total

    return SimpleNamespace(forward_v1=forward_v1, backward_dx_v1=backward_dx_v1, backward_dw_v1=backward_dw_v1,
                           im2col_v2=im2col_v2, col2im_v2=col2im_v2)


def _blocks(n):
    return (n + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK


# --- wrappers: the same code launches on CuPy arrays (GPU) and NumPy arrays (simulator) ------

def conv2d_forward_v1(x, w, b, stride, padding):
    """v1: one thread per output pixel."""
    x, w, b, stride, padding = checks.forward_inputs(x, w, b, stride, padding)
    xp = get_array_module(x)
    N, (OC, C, KH, KW) = x.shape[0], w.shape
    OH, OW = checks.output_size(x.shape[2], x.shape[3], KH, KW, stride, padding)
    b = xp.zeros(OC, x.dtype) if b is None else b
    y = xp.empty((N, OC, OH, OW), x.dtype)
    launch(_kernels(x.dtype).forward_v1, _blocks(y.size), THREADS_PER_BLOCK, x, w, b, *stride, *padding, y)
    return y


def conv2d_backward_v1(dy, x, w, stride, padding, need_dx=True):
    """v1: one thread per input pixel (dx, unless not need_dx) and one per weight (dw)."""
    dy, x, w, stride, padding = checks.backward_inputs(dy, x, w, stride, padding)
    xp = get_array_module(x)
    dx, dw = xp.empty_like(x) if need_dx else None, xp.empty_like(w)
    K = _kernels(x.dtype)
    if need_dx:
        launch(K.backward_dx_v1, _blocks(dx.size), THREADS_PER_BLOCK, dy, w, *stride, *padding, dx)
    launch(K.backward_dw_v1, _blocks(dw.size), THREADS_PER_BLOCK, dy, x, *stride, *padding, dw)
    return dx, dw, dy.sum(axis=(0, 2, 3))


def _im2col(x, KH, KW, stride, padding):
    xp = get_array_module(x)
    N, C, H, W = x.shape
    OH, OW = checks.output_size(H, W, KH, KW, stride, padding)
    cols = xp.empty((C * KH * KW, N * OH * OW), x.dtype)
    launch(_kernels(x.dtype).im2col_v2, _blocks(cols.size), THREADS_PER_BLOCK, x, KH, KW, *stride, *padding, OH, OW, cols)
    return cols


def conv2d_forward_v2(x, w, b, stride, padding):
    """v2: im2col kernel, then one GEMM."""
    x, w, b, stride, padding = checks.forward_inputs(x, w, b, stride, padding)
    xp = get_array_module(x)
    N, (OC, C, KH, KW) = x.shape[0], w.shape
    OH, OW = checks.output_size(x.shape[2], x.shape[3], KH, KW, stride, padding)
    y = w.reshape(OC, -1) @ _im2col(x, KH, KW, stride, padding)                # (OC, N*OH*OW)
    y = xp.ascontiguousarray(y.reshape(OC, N, OH, OW).transpose(1, 0, 2, 3))   # (N, OC, OH, OW)
    if b is not None:
        y += b[:, None, None]
    return y


def conv2d_backward_v2(dy, x, w, stride, padding, need_dx=True):
    """v2: two GEMMs and a col2im kernel (one GEMM when not need_dx)."""
    dy, x, w, stride, padding = checks.backward_inputs(dy, x, w, stride, padding)
    xp = get_array_module(x)
    OC, C, KH, KW = w.shape
    OH, OW = dy.shape[2:]
    dy_rows = xp.ascontiguousarray(dy.transpose(1, 0, 2, 3)).reshape(OC, -1)     # (OC, N*OH*OW)
    dw = (dy_rows @ _im2col(x, KH, KW, stride, padding).T).reshape(w.shape)
    if not need_dx:
        return None, dw, dy.sum(axis=(0, 2, 3))
    dcols = w.reshape(OC, -1).T @ dy_rows                                     # (C*KH*KW, N*OH*OW)
    dx = xp.empty_like(x)
    launch(_kernels(x.dtype).col2im_v2, _blocks(dx.size), THREADS_PER_BLOCK, dcols, KH, KW, *stride, *padding, OH, OW, dx)
    return dx, dw, dy.sum(axis=(0, 2, 3))


VERSIONS = {1: (conv2d_forward_v1, conv2d_backward_v1),
            2: (conv2d_forward_v2, conv2d_backward_v2)}
conv2d_forward = conv2d_forward_v2          # the newest version: what the dispatch calls
conv2d_backward = conv2d_backward_v2
