"""Fused softmax cross-entropy and the fused CLIP loss (array level: NumPy or CuPy in and out).

    lse_i  = log sum_j exp(x_ij)          one pass per row, running max m and sum l
    loss_i = lse_i - x_i,t_i
    dx_ij  = (exp(x_ij - lse_i) - [j == t_i]) * dy_i          softmax recomputed from lse

clip_loss applies this to the rows and the columns of a square logits matrix S (B, B) with the
diagonal as targets, and averages the two mean losses; its backward also gives the gradient of
logit_scale from the unscaled similarities: dscale = sum(dS * sims).

Implementations: reference.py (NumPy, the definition), numba_cpu.py, numba_cuda.py (v1..v3),
cupy_raw.py (CUDA C). Which one runs: reference.py in `miniclip.kernels.use("reference")`
mode, otherwise numba_cpu for NumPy arrays and the newest numba_cuda version for CuPy arrays.
lse is always float64 (see reference.py); every other output has the logits' dtype.
"""
from miniclip.backend import get_array_module

from .. import pick


def _float_matrix(name, x):
    if getattr(x, "ndim", None) != 2 or x.dtype.name not in ("float32", "float64"):
        raise TypeError(f"{name}: expected a 2-D float32 or float64 array, got {type(x).__name__} "
                        f"of shape {getattr(x, 'shape', None)} dtype {getattr(x, 'dtype', None)}")
    if 0 in x.shape:
        raise ValueError(f"{name}: expected at least one row and one column, got shape {x.shape}")
    # The kernels index rows as contiguous runs: copy a strided view once, here, on purpose.
    return get_array_module(x).ascontiguousarray(x)


def _vector(name, v, n, dtype):
    if getattr(v, "shape", None) != (n,) or v.dtype != dtype:
        raise ValueError(f"{name}: expected shape ({n},) dtype {dtype}, "
                         f"got shape {getattr(v, 'shape', None)} dtype {getattr(v, 'dtype', None)}")
    return get_array_module(v).ascontiguousarray(v)


def _targets(targets, N, C):
    xp = get_array_module(targets)
    if getattr(targets, "shape", None) != (N,) or targets.dtype.kind not in "iu":
        raise TypeError(f"targets: expected an integer array of shape ({N},), "
                        f"got shape {getattr(targets, 'shape', None)} dtype {getattr(targets, 'dtype', None)}")
    if int(targets.min()) < 0 or int(targets.max()) >= C:       # (a device sync on the GPU)
        raise ValueError(f"targets: class indices must be in [0, {C}), "
                         f"got min {int(targets.min())} max {int(targets.max())}")
    # One integer type for every kernel, so each is compiled once per logits dtype.
    return xp.ascontiguousarray(targets, dtype=xp.int64)


def softmax_xent_forward(logits, targets):
    """(loss, lse) for logits (N, C) and integer targets (N,): loss (N,) per row, lse (N,) float64.

    The mean loss is loss.mean(); its backward is softmax_xent_backward with dy = full(N, g / N).
    """
    logits = _float_matrix("logits", logits)
    N, C = logits.shape
    targets = _targets(targets, N, C)
    return pick("softmax_xent", logits).softmax_xent_forward(logits, targets)


def softmax_xent_backward(logits, targets, lse, dy):
    """dlogits (N, C) = (softmax(logits) - onehot(targets)) * dy[:, None], dy (N,) the gradient of loss."""
    logits = _float_matrix("logits", logits)
    N, C = logits.shape
    targets = _targets(targets, N, C)
    lse = _vector("lse", lse, N, "float64")
    dy = _vector("dy", dy, N, logits.dtype)
    return pick("softmax_xent", logits).softmax_xent_backward(logits, targets, lse, dy)


def _square(logits):
    logits = _float_matrix("logits", logits)
    if logits.shape[0] != logits.shape[1]:
        raise ValueError(f"clip_loss: logits must be square (B, B), got shape {logits.shape}")
    return logits


def clip_loss_forward(logits):
    """(loss, lse_row, lse_col): the CLIP loss (0-d, logits' dtype) of logits (B, B), whose
    diagonal holds the positive pairs, and the row and column lse (B,) float64."""
    logits = _square(logits)
    return pick("softmax_xent", logits).clip_loss_forward(logits)


def clip_loss_backward(logits, lse_row, lse_col, dy=1.0, sims=None):
    """(dlogits, dscale): dy times the gradient of the CLIP loss w.r.t. logits (B, B), and, when
    the unscaled similarities sims = I @ T.T (B, B) are given, w.r.t. logit_scale (0-d; else None).

    dy is a Python number or a 0-d array (the gradient of the scalar loss).
    """
    logits = _square(logits)
    B = logits.shape[0]
    lse_row = _vector("lse_row", lse_row, B, "float64")
    lse_col = _vector("lse_col", lse_col, B, "float64")
    if getattr(dy, "shape", ()) != ():
        raise ValueError(f"dy: expected a number or a 0-d array, got shape {dy.shape}")
    if sims is not None:
        if sims.shape != logits.shape or sims.dtype != logits.dtype:
            raise ValueError(f"sims: expected shape {logits.shape} dtype {logits.dtype}, "
                             f"got shape {sims.shape} dtype {sims.dtype}")
        sims = get_array_module(sims).ascontiguousarray(sims)
    return pick("softmax_xent", logits).clip_loss_backward(logits, lse_row, lse_col, dy, sims)
