"""Softmax cross-entropy and the CLIP loss as Numba CPU kernels: SIMD exp, one read of each row.

Speed here is the speed of exp: everything else is a few adds per logit. Numba's math.exp is a
scalar call into libm (Numba vectorises it only with Intel's SVML, which is not here), one
element at a time, ~10 ns: 1M logits took 5 ms on 2 threads, against torch's 0.6 ms. So the kernels use
their own exp, built from multiplies and adds only, which LLVM turns into AVX/AVX-512 code:

    exp(d) = exp(d / 1024) ** 1024          for d <= 0, the only case softmax needs (d = x - max)

d / 1024 is tiny, so a Taylor series of degree 9 is exact to float64 rounding (its error is
below 3e-18), and ten squarings raise it to the 1024th power. Each squaring doubles the relative
error, so the result is within ~5e-13 relative of exp(d): far inside every float64 tolerance.
Below d = -80 the result is set to 0 (exp(-80) ~ 2e-35, nothing next to the row's largest
term, exp(0) = 1).

A SIMD loop cannot carry the online-softmax update of a single running max (Milakov &
Gimelshein 2018: x > m: l <- l exp(m - x) + 1, m <- x; a branch and a dependency per element),
so a row takes two loops: its max, then sum_j exp(x_j - max). The row is read from memory once,
by the first loop; the second finds it in the L1 cache. The online update survives where it
pays, merging statistics of whole parts (below). The backward takes no max or sum again:
softmax is exp(x - lse) with the saved lse. Sums and lse are float64 whatever the logits' dtype
(see reference.py for why).

The CLIP loss needs both the row and the column lse of S. `clip_loss_forward` reads S once in
chunks of ROWS rows: within a chunk, each column's max first, then for each row its lse and
every column's sum of exp(x - column max), from the same load of the row. Chunks run in
parallel, each with its own column statistics (m, l), merged at the end with

    m = max(m1, m2),   l = l1 * exp(m1 - m) + l2 * exp(m2 - m)

Parallelism: prange over rows (over row chunks for the clip forward).

Checked against reference.py in tests/kernels/test_softmax_xent.py.
"""
import math

import numpy as np
from numba import njit, prange

# reassoc lets LLVM split sums into SIMD lanes; contract fuses multiply-adds. No flags that
# assume away inf or nan.
FASTMATH = {"reassoc", "contract"}
ROWS = 16           # rows per chunk of the clip forward (16 x 1024 float32: 64 KB)
LANES = 16          # independent running maxima in row_max


@njit(cache=True, inline="always", fastmath=FASTMATH)
def exp_nonpositive(d):
    """exp(d) for d <= 0 in multiplies and adds (see the module docstring); 0 below d = -80."""
    y = d * (1.0 / 1024.0)
    # Horner's form of 1 + y + y^2/2! + ... + y^9/9!
    p = 1.0 + y * (1.0 + y * (1.0 / 2 + y * (1.0 / 6 + y * (1.0 / 24 + y * (1.0 / 120 + y * (
        1.0 / 720 + y * (1.0 / 5040 + y * (1.0 / 40320 + y * (1.0 / 362880)))))))))
    for _ in range(10):
        p = p * p
    return 0.0 if d < -80.0 else p          # (so a NaN stays NaN)


@njit(cache=True, inline="always")
def online_update(m, l, x):
    """Fold one logit x into the running (max, sum of exp) pair: the online softmax step
    (Milakov & Gimelshein, Alg. 3). The SIMD loops here cannot use it (see the module docstring);
    numba_cuda.py's kernels do, and tutorials/05 steps through it."""
    if x > m:
        return x, l * math.exp(m - x) + 1.0
    return m, l + math.exp(x - m)


@njit(cache=True, inline="always")
def merge(m1, l1, m2, l2):
    """Combine the (m, l) statistics of two disjoint parts of a row or column."""
    m = max(m1, m2)
    if m == -np.inf:            # both parts empty: exp(-inf - -inf) would be nan
        return m, 0.0
    return m, l1 * math.exp(m1 - m) + l2 * math.exp(m2 - m)


@njit(cache=True)
def row_max(x):
    """max_j x_j, as LANES independent running maxima merged at the end. One running max is a
    chain of dependent steps, one per element; independent ones let the CPU overlap them
    (LLVM does not vectorise this max by itself): 0.3 against 0.6 ms for 1024 x 1024, measured."""
    lanes = np.full(LANES, -np.inf)
    n = x.size - x.size % LANES
    for j0 in range(0, n, LANES):
        for k in range(LANES):
            v = np.float64(x[j0 + k])
            lanes[k] = v if v > lanes[k] else lanes[k]
    m = -np.inf
    for k in range(LANES):
        m = max(m, lanes[k])
    for j in range(n, x.size):
        m = max(m, np.float64(x[j]))
    return m


@njit(cache=True, inline="always", fastmath=FASTMATH)
def row_lse(x):
    """log sum_j exp(x_j), in float64: the max, then the sum of exp(x - max)."""
    m = row_max(x)
    l = 0.0
    for j in range(x.size):
        l += exp_nonpositive(x[j] - m)
    return m + math.log(l)


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def _softmax_xent_forward(logits, targets, loss, lse):
    N = logits.shape[0]
    for i in prange(N):
        lse[i] = row_lse(logits[i])
        loss[i] = lse[i] - logits[i, targets[i]]


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def _softmax_xent_backward(logits, targets, lse, dy, dlogits):
    N, C = logits.shape
    for i in prange(N):
        for j in range(C):
            dlogits[i, j] = exp_nonpositive(logits[i, j] - lse[i]) * dy[i]
        dlogits[i, targets[i]] -= dy[i]


def softmax_xent_forward(logits, targets):
    """(loss (N,) in the logits' dtype, lse (N,) float64)."""
    N = logits.shape[0]
    loss = np.empty(N, logits.dtype)
    lse = np.empty(N, np.float64)
    _softmax_xent_forward(logits, targets, loss, lse)
    return loss, lse


def softmax_xent_backward(logits, targets, lse, dy):
    """dlogits (N, C) = (exp(logits - lse) - onehot(targets)) * dy."""
    dlogits = np.empty_like(logits)
    _softmax_xent_backward(logits, targets, lse, dy, dlogits)
    return dlogits


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def _clip_loss_forward(logits, lse_row, lse_col):
    B = logits.shape[0]
    n_chunks = (B + ROWS - 1) // ROWS
    col_m = np.full((n_chunks, B), -np.inf)         # each chunk's column statistics (m, l)
    col_l = np.zeros((n_chunks, B))
    for c in prange(n_chunks):
        i0, i1 = c * ROWS, min(B, (c + 1) * ROWS)
        m_c, l_c = col_m[c], col_l[c]
        for i in range(i0, i1):
            for j in range(B):
                m_c[j] = max(m_c[j], np.float64(logits[i, j]))
        for i in range(i0, i1):
            lse_row[i] = row_lse(logits[i])
            for j in range(B):
                l_c[j] += exp_nonpositive(logits[i, j] - m_c[j])
    for j in range(B):
        m, l = -np.inf, 0.0
        for c in range(n_chunks):
            m, l = merge(m, l, col_m[c, j], col_l[c, j])
        lse_col[j] = m + math.log(l)
    # loss = (mean_i (lse_row_i - S_ii) + mean_j (lse_col_j - S_jj)) / 2
    total = 0.0
    for i in range(B):
        total += lse_row[i] + lse_col[i] - 2.0 * logits[i, i]
    return total / (2 * B)


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def _clip_loss_backward(logits, lse_row, lse_col, dy, sims, with_dscale, dlogits):
    B = logits.shape[0]
    scale = dy / (2 * B)
    dscale = 0.0
    for i in prange(B):
        row_dscale = 0.0
        for j in range(B):
            g = scale * (exp_nonpositive(logits[i, j] - lse_row[i]) + exp_nonpositive(logits[i, j] - lse_col[j]))
            dlogits[i, j] = g
            if with_dscale:
                row_dscale += g * sims[i, j]
        # the positive pair's -2 [i == j], out of the SIMD loop (recomputed in float64: no cancellation)
        x = logits[i, i]
        dlogits[i, i] = scale * (exp_nonpositive(x - lse_row[i]) + exp_nonpositive(x - lse_col[i]) - 2.0)
        if with_dscale:
            row_dscale -= 2.0 * scale * sims[i, i]
        dscale += row_dscale                        # a prange reduction: Numba sums the per-thread parts
    return dscale


def clip_loss_forward(logits):
    """(loss 0-d in the logits' dtype, lse_row (B,) float64, lse_col (B,) float64)."""
    B = logits.shape[0]
    lse_row = np.empty(B, np.float64)
    lse_col = np.empty(B, np.float64)
    loss = _clip_loss_forward(logits, lse_row, lse_col)
    return np.asarray(loss, logits.dtype), lse_row, lse_col


def clip_loss_backward(logits, lse_row, lse_col, dy, sims=None):
    """(dlogits (B, B), dscale 0-d or None); dscale = sum(dlogits * sims)."""
    dlogits = np.empty_like(logits)
    with_dscale = sims is not None
    # Without sims the kernel still needs a (B, B) array of the same type: the logits stand in,
    # unread, so one compiled kernel serves both cases.
    dscale = _clip_loss_backward(logits, lse_row, lse_col, float(dy),
                                 sims if with_dscale else logits, with_dscale, dlogits)
    return dlogits, (np.asarray(dscale, logits.dtype) if with_dscale else None)
