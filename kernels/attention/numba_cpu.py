"""Flash attention on the CPU: BLAS matmuls on tiles, fused Numba passes between them, a thread per head group.

The algorithm is FlashAttention-2 (Dao, arXiv:2307.08691). Keys and values are cut into tiles of
Bc rows; for each tile j and every query row i:

    S_ij  = scale Q_i K_j^T + M_ij             scores of this tile only, never the whole row
    m_new = max(m_i, rowmax(S_ij))             running max
    P_ij  = exp(S_ij - m_new)
    alpha = exp(m_i - m_new)                   what was summed under the old max is rescaled
    l_i   = alpha l_i + rowsum(P_ij)           running sum of exp(S - m)
    O_i   = alpha O_i + P_ij V_j               unnormalised output
    m_i   = m_new
  and at the end  O_i = O_i / l_i,  lse_i = m_i + log l_i.
With a single tile (every key fits in Bc: CLIP's 77 tokens do) there is nothing to rescale:
P is divided by l before the product, and P V is the output.

The backward keeps no (Tq, Tk) matrix from the forward: per key tile it recomputes
P = exp(S - lse) from the stored lse, and with D_i = rowsum(dO_i * O_i) (equal to
rowsum(P_i * dP_i), but computed once from two (Tq, d) arrays):

    dV_j = P^T dO,  dP = dO V_j^T,  dS = P * (dP - D),  dQ += scale dS K_j,  dK_j = scale dS^T Q
(the scale is applied once, to dS).

How the work is laid out, and why (measured on this 2-core machine, which other jobs share, so
+-20%; B*H = 256, T = 77, d = 64, float32, forward, unless said otherwise):
- @njit(parallel=True) over (b, h), the matmuls as Numba loops: 19 ms. LLVM's loops reach about
  25 GFLOP/s, and @njit cannot call BLAS without SciPy.
- each tile for all heads at once, NumPy's batched matmul (OpenBLAS, ~90 GFLOP/s) and an
  @njit(parallel=True) online-softmax loop between the matmuls: 9 ms.
- the same for groups of 32 heads spread over a pool of threads: 6.7 ms. NumPy's matmul and
  ufuncs release the GIL, so one thread's exp overlaps the other's matrix product.
- the softmax step as NumPy array operations: 6.6 ms. Numba's math.exp is a scalar libm call
  (3.7 ms per 1.5M elements, against 0.74 ms for NumPy's SIMD exp). But each NumPy operation is
  a pass over S of its own, and together they cost more than the two matmuls: for one group of
  32 heads at T = 65 on one thread, S.max 95 us, S -= m 60, exp 67, P.sum 61, the scale 20,
  o *= alpha 31, ... against 336 us for both products.
- now: one @njit(nogil=True) kernel per tile does all the elementwise work between two
  products, rows still in the cache. Its exp is softmax_xent's exp_nonpositive, a polynomial
  that LLVM vectorises (1e-7 relative in float32, 5e-16 in float64), its max softmax_xent's
  `maximum`. nogil, not parallel=True: the pool already gives each thread its head group.
  The forward kernel takes every row's max first, then every row's exponentials (a row's exp
  loop waits for the last steps of its max, which the next row's max hides: 25% faster than
  both loops row by row); ~55 ns per query row at T = 65 (one group: ~120 us, where the NumPy
  passes took ~350), ~105 ns at T = 77: the SIMD loops take 64 keys at a time and the 13 left
  over one by one. The backward's takes one pass: P and scale dS, ~30-50 ns per row.
- transposes only where BLAS needs them: S = Q K^T with K^T a view runs ~1.6x slower in
  OpenBLAS than with a row-major copy (270 against 165 us), so K^T and V^T are copied, by a
  Numba loop that reads k's rows (42 us where NumPy's copy of the transposed view takes 117 on
  a packed q/k/v). A transposed left operand is as fast as a row-major one (P^T dO: 167 against
  162 us), so P^T and dS^T stay views. D is an einsum (35 us on strided dO, O; (dO * O).sum: 94).
- the temporaries of a call (K^T, V^T, S, dP: ~0.5 MB each for a group at T = 65) live in memory
  each pool thread keeps from call to call. Fresh arrays were fresh pages whenever malloc had
  returned the last ones to the system, and the first touch of every 4 KB page is a page fault
  (~2 us here, in a VM): ~5000 of them per backward call, 28-31 ms against 17-20 ms without
  (T = 77, causal, one thread). Kept memory costs ~2 MB per thread at CLIP's sizes.
One group of 32 heads on one thread, without page faults, previous version -> this one: forward
725 -> 490 us at T = 65, 1000 -> 770 us at T = 77; backward 1275 -> 985 us, 1800 -> 1390 us.
Measured with kernels/attention/bench.py (2 threads, medians of 5 rounds, the previous version
and this one alternating): forward 4.4-4.9 -> 2.8-3.1 ms at T = 65, 6.2-6.6 -> 4.4-4.8 ms at
T = 77; forward + backward 12.5-15.5 -> 9.7-11.5 ms at T = 65, 15.7-24 -> 12-19 ms at T = 77
(fresh o, dq, dk, dv each call, whose page faults every version pays); torch's
scaled_dot_product_attention in the same runs: 5.5 and 6.8-7.7 ms forward, 20 and 25 ms forward +
backward. The products are now ~2/3 of the forward and ~4/5 of the backward.

q, k and v may be strided views (the heads of one fused q/k/v projection, (B, T, 3, H, d)
permuted to (B, H, T, d)): NumPy's matmul hands a matrix with contiguous rows to BLAS with its
row stride, so they are not copied (a copy of q, k, v cost ~6% of a tiny-vit-s training step).
The outputs may be such views too (out=, dq=, dk=, dv=): multi-head attention wants o as
(B, T, H, d), the heads side by side, and dq, dk, dv side by side in one (B, T, 3, H, d) array,
the gradient of the fused projection. The kernel writes into the caller's arrays through views
(o[b], dk[:, :, j0:j1]) with np.matmul's out=, so those layouts are filled directly and nothing
is copied or concatenated afterwards. It writes each output element once: an elementwise pass
over such a strided view runs ~4x slower than over a contiguous array (x *= 2 on (8, 4, 65, 64)
float32: 38 against 8.5 us). With one key tile the last product writes o and dq itself; with
several, the accumulators O and dQ, updated once per tile, are contiguous arrays of one head
group, written out at the end.
Bc = 128 measured faster than 64 (6.6 against 8.4 ms): CLIP's 77 tokens fit in one key tile,
longer sequences take several (the tests use Bc = 8 to exercise the rescaling by alpha). On the
CPU a "query tile" is every query row of a group (Br = Tq): the threads already have the head
groups to share, and S is (heads, Tq, Bc), so memory still grows linearly in Tq.

Checked against reference.py (forward and backward, float32 and float64, with and without masks,
one key tile and several, a row whose every key is masked) and the fused kernels against NumPy
with np.exp, in tests/kernels/test_attention.py.
"""
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit

# softmax_xent's exp in multiplies and adds, which LLVM vectorises (math.exp is a scalar libm
# call), and its NaN-propagating max, which LLVM vectorises as a reduction
from ..softmax_xent.numba_cpu import exp_nonpositive, maximum
from . import checks

Bc = 128                # keys per tile: CLIP's 77 tokens take one (see the docstring)
HEADS_PER_TASK = 32     # one thread's share of the heads: measured best of 16, 32 and 64
# reassoc lets LLVM split the row sums into SIMD lanes; contract fuses multiply-adds. No flag
# assumes away inf or NaN: masked scores are -inf.
FASTMATH = {"reassoc", "contract"}

_pool = None
_kept = threading.local()       # each pool thread's temporaries, kept from call to call


def _map_over_batch(task, B, H):
    """Run task(batch_slice) for groups of whole batch entries, spread over Numba's thread count."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=numba.get_num_threads())
    G = max(1, HEADS_PER_TASK // H)
    groups = [slice(b0, min(b0 + G, B)) for b0 in range(0, B, G)]
    list(_pool.map(task, groups))        # list() re-raises any exception of a task here


def _batch(mask, b):
    """The mask's rows for batch slice b (all of it when it is broadcast over the batch)."""
    return mask if mask is None or mask.shape[0] == 1 else mask[b]


def _key_tiles(Tq, Tk, is_causal, Bc):
    """[(j0, j1)] for the tiles of keys that some query sees, and how many keys they cover."""
    seen = min(Tk, Tq) if is_causal else Tk     # causal: no query sees a key past the last query
    return [(j0, min(j0 + Bc, seen)) for j0 in range(0, seen, Bc)], seen


def _bias(mask, j0, j1, shape):
    """The additive mask for keys j0:j1 as a read-only view of S's shape (broadcast, never
    copied), or None."""
    if mask is None:
        return None
    return np.broadcast_to(mask if mask.shape[3] == 1 else mask[..., j0:j1], shape)


def _temporary(name, shape, dtype):
    """An uninitialised array for one of this thread's temporaries, in memory kept from call to
    call (see the module docstring: fresh memory costs a page fault per 4 KB)."""
    size = math.prod(shape)
    memory = getattr(_kept, name, None)
    if memory is None or memory.dtype != dtype or memory.size < size:
        memory = np.empty(size, dtype)
        setattr(_kept, name, memory)
    return memory[:size].reshape(shape)


@njit(cache=True, nogil=True)
def _transpose_into(x, xt):
    """xt (G, H, d, T) = x (G, H, T, d) transposed, reading x row by row: a strided view's rows
    are contiguous (NumPy's copy of the transposed view took ~3x longer on a packed q/k/v)."""
    G, H, T, d = x.shape
    for g in range(G):
        for h in range(H):
            for j in range(T):
                for c in range(d):
                    xt[g, h, c, j] = x[g, h, j, c]


def _transposed(x, name):
    """x (G, H, T, d) as a row-major (G, H, d, T) array, the right operand of S = Q K^T or
    dP = dO V^T: NumPy hands a transposed right operand to BLAS as it is, but OpenBLAS multiplies
    by it ~1.6x slower at these sizes, more than the copy costs (measured). A transposed left
    operand (P^T dO, dS^T Q) runs as fast as a row-major one: those stay views."""
    G, H, T, d = x.shape
    xt = _temporary(name, (G, H, d, T), x.dtype)
    _transpose_into(x, xt)
    return xt


# --- forward -------------------------------------------------------------------------------

@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _online_softmax_tile(S, scale, bias, is_causal, j0, m, l, alpha, normalise):
    """One key tile of the online softmax, in place: S (G, H, Tq, n) = Q K_j^T becomes
    P = exp(scale S + bias - m_new); the row statistics m, l (G, H, Tq) are updated, and
    alpha = exp(m_old - m_new) is left for rescaling O. normalise (the tile is the only one):
    P is divided by l, so that P V is the output itself."""
    G, H, Tq, n = S.shape
    # Every row's max first, then every row's exponentials: a row's exp loop must wait for the
    # last steps of its max, which the next row's max hides when the rows come one after the
    # other (25% faster than both loops row by row, measured).
    m_new = np.empty_like(m)                            # the running max, raised by this tile
    for g in range(G):
        for h in range(H):
            for i in range(Tq):
                row = S[g, h, i]
                end = max(0, min(n, i + 1 - j0)) if is_causal else n    # causal: keys j0 + end.. are in i's future
                row[end:] = -np.inf
                new = m[g, h, i]
                for j in range(end):
                    s = scale * row[j]
                    if bias is not None:
                        s += bias[g, h, i, j]
                    row[j] = s
                    new = maximum(new, s)
                m_new[g, h, i] = new
    for g in range(G):
        for h in range(H):
            for i in range(Tq):
                row = S[g, h, i]
                new = m_new[g, h, i]
                if new == -np.inf:
                    # Every key so far is masked: P = exp(-inf) = 0 (exp(s - new) would be NaN),
                    # and l and O stay 0 (m stays -inf, so the next tile's max is the true one).
                    row[:] = 0.0
                    alpha[g, h, i] = 1.0
                else:
                    a = exp_nonpositive(m[g, h, i] - new)              # 0 on the first tile
                    total = a * l[g, h, i]
                    for j in range(n):
                        p = exp_nonpositive(row[j] - new)
                        row[j] = p
                        total += p
                    m[g, h, i], l[g, h, i], alpha[g, h, i] = new, total, a
                if normalise:
                    inv_l = np.reciprocal(l[g, h, i])   # every key masked: 0 * inf = NaN, as torch
                    for j in range(n):
                        row[j] *= inv_l


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _rescale_add(O, alpha, PV):
    """O = alpha O + P V, row by row (a later key tile: what O holds was summed under the old max)."""
    G, H, Tq, d = O.shape
    for g in range(G):
        for h in range(H):
            for i in range(Tq):
                a = alpha[g, h, i]
                for c in range(d):
                    O[g, h, i, c] = a * O[g, h, i, c] + PV[g, h, i, c]


def _forward_group(q, k, v, scale, is_causal, mask, o, lse, Bc):
    """FlashAttention-2 forward for a few batch entries, all their heads at once."""
    G, H, Tq, d = q.shape
    tiles, _ = _key_tiles(Tq, k.shape[2], is_causal, Bc)
    Kt = _transposed(k, "Kt")                           # (G, H, d, Tk)
    m = np.full((G, H, Tq), -np.inf, q.dtype)           # running row max
    l = np.zeros((G, H, Tq), q.dtype)                   # running row sum of exp(S - m)
    alpha = np.empty((G, H, Tq), q.dtype)
    one_tile = len(tiles) == 1
    # One tile (CLIP's case): P comes normalised, and P V is written straight into o. Several:
    # O sums the unnormalised output in a contiguous array, divided into o at the end.
    O = o if one_tile else np.empty((G, H, Tq, d), q.dtype)
    for j0, j1 in tiles:
        S = _temporary("S", (G, H, Tq, j1 - j0), q.dtype)
        np.matmul(q, Kt[..., j0:j1], out=S)             # (G, H, Tq, Bc): becomes P
        _online_softmax_tile(S, scale, _bias(mask, j0, j1, S.shape), is_causal, j0, m, l, alpha, one_tile)
        if j0 == 0:
            np.matmul(S, v[:, :, j0:j1], out=O)         # (G, H, Tq, d)
        else:
            _rescale_add(O, alpha, S @ v[:, :, j0:j1])
    if not one_tile:
        np.divide(O, l[..., None], out=o)               # the one write into o (maybe a strided view)
    np.add(m, np.log(l), out=lse)


def attention_forward(q, k, v, scale, is_causal=False, mask=None, out=None, Bc=Bc):
    """Flash attention forward on NumPy arrays: returns (o, lse), lse of shape (B, H, Tq).
    o is `out` when given (any (B, H, Tq, d) view, written in place), else a new array."""
    q, k, v, mask = checks.forward_inputs(q, k, v, is_causal, mask, rows_only=True)
    checks.output("out", out, q)
    B, H, Tq, d = q.shape
    o = np.empty(q.shape, q.dtype) if out is None else out       # (B, H, Tq, d)
    lse = np.empty((B, H, Tq), q.dtype)

    def task(b):
        _forward_group(q[b], k[b], v[b], q.dtype.type(scale), is_causal, _batch(mask, b), o[b], lse[b], Bc)
    _map_over_batch(task, B, H)
    return o, lse


# --- backward ------------------------------------------------------------------------------

@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _softmax_backward_tile(S, dP, scale, bias, is_causal, j0, lse, D):
    """One key tile, in place, in one pass: S (G, H, Tq, n) = Q K_j^T becomes
    P = exp(scale S + bias - lse), and dP = dO V_j^T becomes scale dS = scale P (dP - D): the
    scale of dQ = scale dS K and dK = scale dS^T Q, applied once here."""
    G, H, Tq, n = S.shape
    for g in range(G):
        for h in range(H):
            for i in range(Tq):
                row, d_row = S[g, h, i], dP[g, h, i]
                end = max(0, min(n, i + 1 - j0)) if is_causal else n
                lse_i, D_i = lse[g, h, i], D[g, h, i]
                for j in range(end):
                    s = scale * row[j]
                    if bias is not None:
                        s += bias[g, h, i, j]
                    p = exp_nonpositive(s - lse_i)          # s - lse <= 0: lse >= the row's max
                    row[j] = p
                    d_row[j] = scale * p * (d_row[j] - D_i)
                row[end:] = 0.0
                d_row[end:] = 0.0


def _backward_group(q, k, v, o, lse, do, scale, is_causal, mask, dq, dk, dv, Bc):
    """FlashAttention-2 backward for a few batch entries, all their heads at once."""
    G, H, Tq, d = q.shape
    tiles, seen = _key_tiles(Tq, k.shape[2], is_causal, Bc)
    Kt, Vt = _transposed(k, "Kt"), _transposed(v, "Vt")    # (G, H, d, Tk)
    D = np.einsum("ghic,ghic->ghi", do, o)              # (G, H, Tq): rowsum(dO * O)
    # dQ sums over the key tiles: with one tile it is written straight into dq; with several it
    # is summed in a contiguous array and written into dq at the end.
    dQ = dq if len(tiles) == 1 else np.empty((G, H, Tq, d), q.dtype)
    for j0, j1 in tiles:
        S, dP = (_temporary(name, (G, H, Tq, j1 - j0), q.dtype) for name in ("S", "dP"))
        np.matmul(q, Kt[..., j0:j1], out=S)             # (G, H, Tq, Bc): becomes P
        np.matmul(do, Vt[..., j0:j1], out=dP)           # (G, H, Tq, Bc): becomes scale dS
        _softmax_backward_tile(S, dP, scale, _bias(mask, j0, j1, S.shape), is_causal, j0, lse, D)
        np.matmul(S.swapaxes(-1, -2), do, out=dv[:, :, j0:j1])     # (G, H, Bc, d): P^T dO
        np.matmul(dP.swapaxes(-1, -2), q, out=dk[:, :, j0:j1])     # (G, H, Bc, d): scale dS^T Q
        if j0 == 0:
            np.matmul(dP, k[:, :, j0:j1], out=dQ)       # (G, H, Tq, d): scale dS K
        else:
            dQ += dP @ k[:, :, j0:j1]
    if dQ is not dq:
        dq[...] = dQ
    dk[:, :, seen:] = 0                                 # causal: keys no query sees
    dv[:, :, seen:] = 0


def attention_backward(q, k, v, o, lse, do, scale, is_causal=False, mask=None, dq=None, dk=None, dv=None,
                       Bc=Bc):
    """Flash attention backward on NumPy arrays: returns (dq, dk, dv), each the array passed for
    it when there is one (any view of the input's shape, written in place), else a new array."""
    q, k, v, o, lse, do, mask = checks.backward_inputs(q, k, v, o, lse, do, is_causal, mask, rows_only=True)
    checks.gradient_outputs(dq, dk, dv, q, k, v)
    B, H, Tq, d = q.shape
    dq = np.empty(q.shape, q.dtype) if dq is None else dq       # (B, H, Tq, d)
    dk = np.empty(k.shape, k.dtype) if dk is None else dk       # (B, H, Tk, d)
    dv = np.empty(v.shape, v.dtype) if dv is None else dv

    def task(b):
        _backward_group(q[b], k[b], v[b], o[b], lse[b], do[b], q.dtype.type(scale), is_causal,
                        _batch(mask, b), dq[b], dk[b], dv[b], Bc)
    _map_over_batch(task, B, H)
    return dq, dk, dv
