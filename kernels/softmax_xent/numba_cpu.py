"""Softmax cross-entropy and the CLIP loss as Numba CPU kernels: SIMD exp and max, in the logits' precision.

Speed here is the speed of exp: everything else is a few adds per logit. Numba's math.exp is a
scalar call into libm (Numba vectorises it only with Intel's SVML, which is not here), one
element at a time, ~10 ns: 1M logits took 5 ms on 2 threads, against torch's 0.6 ms. So the
kernels use their own exp, built from multiplies, adds and integer ops only, which LLVM turns
into AVX-512 code. For d <= 0 (the only case softmax needs: d = x - max):

    exp(d) = 2^k exp(r),   k = round(d / ln 2),   r = d - k ln 2  in [-ln2/2, ln2/2]

exp(r) is a Taylor polynomial (degree 7 in float32, 12 in float64: the first dropped term,
0.35^8/8! = 5e-9 and 0.35^13/13! = 2e-16, is below each type's rounding), and 2^k is made by writing k + bias
into the float's exponent bits (`float_from_bits`). ln 2 is split in two (Cody & Waite 1980)
so that k ln 2 is subtracted without rounding error. Below d = -87 the result is 0
(exp(-87) ~ 2e-38, the smallest normal float32; nothing next to the row's largest term, 1).
Measured against float64 np.exp: 1e-7 relative in float32 (about one rounding), 5e-16 in float64
(tests/kernels/test_softmax_xent.py::test_simd_exp_matches_numpy_exp).

The exp runs in the logits' own precision: a float32 kernel computes it in 16 AVX-512 lanes
instead of 8. Sums and lse stay float64 whatever the logits' dtype (see reference.py for why).

The max of a row is `maximum`, LLVM's NaN-propagating max: LLVM vectorises it as a reduction,
which it will not do for Python's max (a compare and a select, whose NaN behaviour it may not
change): 0.1 against 0.3 ns per float32 logit on one core, measured.

A SIMD loop cannot carry the online-softmax update of a single running max (Milakov &
Gimelshein 2018: x > m: l <- l exp(m - x) + 1, m <- x; a branch and a dependency per element),
so a row takes two loops: its max, then sum_j exp(x_j - max). The row is read from memory once,
by the first loop; the second finds it in the L1 cache. The online update survives where it
pays, merging statistics of whole parts (below). The backward takes no max or sum again:
softmax is exp(x - lse) with the saved lse, passed as lse_hi + lse_lo in the logits' dtype so
that x - lse runs in the logits' precision without losing lse's float64 digits.

The CLIP loss needs both the row and the column lse of S. `clip_loss_forward` reads S once, in
chunks of ROWS rows: per chunk, each row's max and each column's running max from one read of
the chunk, then each row's sum of exp and every column's running sum from a second read, which
finds the chunk in the cache. A column's running sum l, kept relative to its running max m, is
rescaled when a chunk raises m to m' (the online update, a chunk at a time: one exp per column
per chunk, not per element):

    l <- l exp(m - m') + sum_(rows i of the chunk) exp(x_ij - m')

The rows are split into one part per thread, each with its own column statistics (m, l),
merged at the end with

    m = max(m1, m2),   l = l1 * exp(m1 - m) + l2 * exp(m2 - m)

(The first version kept (m, l) per chunk of 16 rows and merged them all at the end: B^2 / 8
scalar libm exps, more time than the B^2 SIMD ones; 1.8 against 1.0 ms at B = 1024.)

Parallelism: prange over rows; over one part of the rows per thread for the clip forward. Below
PARALLEL_MIN logits (512 x 512 runs on one thread, 1024 x 1024 on all) the kernels run on one
thread: waking the sleeping second thread costs more than it saves (`threads_for`).

Checked against reference.py in tests/kernels/test_softmax_xent.py.
"""
import contextlib
import decimal
import math

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

# reassoc lets LLVM split sums into SIMD lanes; contract fuses multiply-adds. No flags that
# assume away inf or nan.
FASTMATH = {"reassoc", "contract"}
ROWS = 16           # rows per chunk of the clip forward (16 x 1024 float32: 64 KB, in L2)
EXP_MIN = -87.0     # exp(d) = 0 below this (2^k must stay a normal float32: k >= -126)
LN2_40_DIGITS = decimal.Context(prec=40).ln(2)
PARALLEL_MIN = 2 ** 19  # logits below this many run on one thread (see `threads_for`)


# ---------------------------------------------------------------- two LLVM operations Numba lacks
@intrinsic
def maximum(typingctx, a, b):
    """max(a, b) as LLVM's llvm.maximum: NaN if either is NaN, and vectorised inside reductions."""
    def codegen(context, builder, signature, args):
        float_type = args[0].type
        fn = builder.module.declare_intrinsic("llvm.maximum", [float_type],
                                              ir.FunctionType(float_type, [float_type, float_type]))
        return builder.call(fn, args)
    if isinstance(a, types.Float) and a == b:
        return a(a, b), codegen


@intrinsic
def float_from_bits(typingctx, bits):
    """The float whose bit pattern is `bits` (int32 -> float32, int64 -> float64): a bitcast."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(signature.return_type))
    if bits in (types.int32, types.int64):
        return {types.int32: types.float32, types.int64: types.float64}[bits](bits), codegen


# ---------------------------------------------------------------- exp(d) for d <= 0
def _exp_nonpositive_in(float_t, int_t, degree):
    """exp(d) for d <= 0 in float_t arithmetic only (see the module docstring); int_t: an
    integer type of float_t's size, for 2^k's bits."""
    F = float_t
    bias = int_t(2 ** (np.finfo(float_t).nexp - 1) - 1)               # 127 or 1023
    shift = int_t(np.finfo(float_t).nmant)                             # 23 or 52 mantissa bits
    log2e = F(1 / math.log(2))
    ln2_hi = F(0.693145751953125)          # 14 significant bits: k ln2_hi is exact for |k| < 2^10
    ln2_lo = F(LN2_40_DIGITS - decimal.Decimal(0.693145751953125))    # the rest of ln 2
    lowest = F(EXP_MIN)
    taylor = np.array([1 / math.factorial(n) for n in range(degree, -1, -1)], float_t)   # highest power first

    def exp_nonpositive(d):
        dc = d if d > lowest else lowest    # clamped, so k is defined (a NaN d becomes `lowest` here)
        k = int_t(dc * log2e - F(0.5))      # round to nearest: for a negative number int() is ceil
        kf = F(k)
        r = (d - kf * ln2_hi) - kf * ln2_lo
        p = taylor[0]
        for n in range(1, len(taylor)):     # Horner's rule
            p = p * r + taylor[n]
        two_k = float_from_bits(int_t((k + bias) << shift))    # (Numba computes ints in int64)
        return F(0.0) if d < lowest else p * two_k      # (a NaN d stays NaN: r is NaN)
    return exp_nonpositive


_exp_float32 = _exp_nonpositive_in(np.float32, np.int32, 7)
_exp_float64 = _exp_nonpositive_in(np.float64, np.int64, 12)


def exp_nonpositive(d):
    """exp(d) for d <= 0 in d's precision, in multiplies and adds that vectorise; 0 below EXP_MIN.
    Jitted code only: Numba compiles the float32 or the float64 version (the overload below)."""
    raise TypeError("exp_nonpositive is only callable from Numba-compiled code")


# Only "contract": "reassoc" would let LLVM fold (d - k ln2_hi) - k ln2_lo back into d - k ln 2.
@overload(exp_nonpositive, jit_options={"fastmath": {"contract"}})
def _exp_nonpositive_overload(d):
    return {types.float32: _exp_float32, types.float64: _exp_float64}.get(d)


# ---------------------------------------------------------------- statistics of rows and parts
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


@njit(cache=True, inline="always", fastmath=FASTMATH)
def row_lse(x):
    """log sum_j exp(x_j), in float64: the max, then the sum of exp(x - max) in x's precision."""
    m = x[0]
    for j in range(x.size):         # from 0, not 1: C iterations leave no scalar remainder when
        m = maximum(m, x[j])        # C is a multiple of the SIMD width
    l = 0.0
    for j in range(x.size):
        l += exp_nonpositive(x[j] - m)
    return np.float64(m) + math.log(l)


@contextlib.contextmanager
def threads_for(n_logits):
    """Run the kernels inside on one thread when there are fewer than PARALLEL_MIN logits: the
    second OpenMP thread sleeps between calls, and waking it took 40-50 us here (measured, 2
    threads against 1: 0.065 against 0.014 ms at 128 x 128, 0.07 against 0.04 at 256 x 256,
    even at 512 x 512, 1.6x faster at 1024 x 1024)."""
    if n_logits >= PARALLEL_MIN:
        yield
        return
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(threads)


def split_lse(lse, dtype):
    """lse (float64) as hi + lo, both of `dtype`: x - hi - lo keeps lse's digits in float32 math."""
    hi = lse.astype(dtype)
    return hi, (lse - hi).astype(dtype)


# ---------------------------------------------------------------- softmax cross-entropy
@njit(cache=True, parallel=True, fastmath=FASTMATH)
def _softmax_xent_forward(logits, targets, loss, lse):
    N = logits.shape[0]
    for i in prange(N):
        lse[i] = row_lse(logits[i])
        loss[i] = lse[i] - logits[i, targets[i]]


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def _softmax_xent_backward(logits, targets, lse_hi, lse_lo, dy, dlogits):
    N, C = logits.shape
    for i in prange(N):
        for j in range(C):
            dlogits[i, j] = exp_nonpositive(logits[i, j] - lse_hi[i] - lse_lo[i]) * dy[i]
        dlogits[i, targets[i]] -= dy[i]


def softmax_xent_forward(logits, targets):
    """(loss (N,) in the logits' dtype, lse (N,) float64)."""
    N = logits.shape[0]
    loss = np.empty(N, logits.dtype)
    lse = np.empty(N, np.float64)
    with threads_for(logits.size):
        _softmax_xent_forward(logits, targets, loss, lse)
    return loss, lse


def softmax_xent_backward(logits, targets, lse, dy):
    """dlogits (N, C) = (exp(logits - lse) - onehot(targets)) * dy."""
    dlogits = np.empty_like(logits)
    with threads_for(logits.size):
        _softmax_xent_backward(logits, targets, *split_lse(lse, logits.dtype), dy.astype(logits.dtype, copy=False),
                               dlogits)
    return dlogits


# ---------------------------------------------------------------- the CLIP loss
@njit(cache=True, parallel=True, fastmath=FASTMATH)
def _clip_loss_forward(logits, n_parts, lse_row, lse_col):
    B = logits.shape[0]
    part = (B + n_parts - 1) // n_parts
    col_m = np.full((n_parts, B), -np.inf).astype(logits.dtype)   # each part's column statistics (m, l)
    col_l = np.zeros((n_parts, B))
    for c in prange(n_parts):
        m, l = col_m[c], col_l[c]
        m_old = np.empty(B, logits.dtype)
        row_m = np.empty(ROWS, logits.dtype)
        for i0 in range(c * part, min(B, (c + 1) * part), ROWS):
            i1 = min(B, i0 + ROWS, (c + 1) * part)
            # Every row's max, and each column's running max raised to this chunk's, from one
            # read of the chunk; then each column's sum rescaled to its new max (the merge
            # formula, the chunk's own terms still to come): one exp per column per chunk.
            m_old[:] = m
            for i in range(i0, i1):
                m_i = logits[i, 0]
                for j in range(B):
                    m_i = maximum(m_i, logits[i, j])
                    m[j] = maximum(m[j], logits[i, j])
                row_m[i - i0] = m_i
            for j in range(B):
                l[j] *= exp_nonpositive(m_old[j] - m[j])
            for i in range(i0, i1):         # the chunk again, from the cache: both sums of exp
                l_i = 0.0
                for j in range(B):
                    l_i += exp_nonpositive(logits[i, j] - row_m[i - i0])
                    l[j] += exp_nonpositive(logits[i, j] - m[j])
                lse_row[i] = row_m[i - i0] + math.log(l_i)
    for j in range(B):
        M, L = np.float64(col_m[0, j]), col_l[0, j]
        for c in range(1, n_parts):
            M, L = merge(M, L, np.float64(col_m[c, j]), col_l[c, j])
        lse_col[j] = M + math.log(L)
    # loss = (mean_i (lse_row_i - S_ii) + mean_j (lse_col_j - S_jj)) / 2
    total = 0.0
    for i in range(B):
        total += lse_row[i] + lse_col[i] - 2.0 * logits[i, i]
    return total / (2 * B)


@njit(cache=True, parallel=True, fastmath=FASTMATH)
def _clip_loss_backward(logits, lse_row, lse_col, row_hi, row_lo, col_hi, col_lo, scale, sims, with_dscale,
                        dlogits):
    B = logits.shape[0]
    dscale = 0.0
    for i in prange(B):
        row_dscale = 0.0
        for j in range(B):
            x = logits[i, j]
            g = scale * (exp_nonpositive(x - row_hi[i] - row_lo[i]) + exp_nonpositive(x - col_hi[j] - col_lo[j]))
            dlogits[i, j] = g
            if with_dscale:
                row_dscale += g * sims[i, j]
        # the positive pair's -2 [i == j], out of the SIMD loop, in float64: no cancellation
        x = np.float64(logits[i, i])
        g = np.float64(scale) * (exp_nonpositive(x - lse_row[i]) + exp_nonpositive(x - lse_col[i]) - 2.0)
        if with_dscale:
            row_dscale += (g - dlogits[i, i]) * sims[i, i]     # this term for the loop's one
        dlogits[i, i] = g
        dscale += row_dscale                        # a prange reduction: Numba sums the per-thread parts
    return dscale


def clip_loss_forward(logits):
    """(loss 0-d in the logits' dtype, lse_row (B,) float64, lse_col (B,) float64)."""
    B = logits.shape[0]
    lse_row = np.empty(B, np.float64)
    lse_col = np.empty(B, np.float64)
    with threads_for(logits.size):
        n_parts = max(1, min(B, numba.get_num_threads()))
        loss = _clip_loss_forward(logits, n_parts, lse_row, lse_col)
    return np.asarray(loss, logits.dtype), lse_row, lse_col


def clip_loss_backward(logits, lse_row, lse_col, dy, sims=None):
    """(dlogits (B, B), dscale 0-d or None); dscale = sum(dlogits * sims)."""
    B = logits.shape[0]
    dlogits = np.empty_like(logits)
    with_dscale = sims is not None
    scale = logits.dtype.type(float(dy) / (2 * B))
    # Without sims the kernel still needs a (B, B) array of the same type: the logits stand in,
    # unread, so one compiled kernel serves both cases.
    with threads_for(logits.size):
        dscale = _clip_loss_backward(logits, lse_row, lse_col, *split_lse(lse_row, logits.dtype),
                                     *split_lse(lse_col, logits.dtype), scale,
                                     sims if with_dscale else logits, with_dscale, dlogits)
    return dlogits, (np.asarray(dscale, logits.dtype) if with_dscale else None)
