"""Flash attention on the CPU: BLAS matmuls on tiles, the online softmax between them, a thread per head group.

The algorithm is FlashAttention-2 (Dao, arXiv:2307.08691). Keys and values are cut into tiles of
Bc rows; for each tile j and every query row i:

    S_ij  = (scale Q_i) K_j^T + M_ij           scores of this tile only, never the whole row
    m_new = max(m_i, rowmax(S_ij))             running max
    P_ij  = exp(S_ij - m_new)
    alpha = exp(m_i - m_new)                   what was summed under the old max is rescaled
    l_i   = alpha l_i + rowsum(P_ij)           running sum of exp(S - m)
    O_i   = alpha O_i + P_ij V_j               unnormalised output
    m_i   = m_new
  and at the end  O_i = O_i / l_i,  lse_i = m_i + log l_i.

The backward keeps no (Tq, Tk) matrix from the forward: per key tile it recomputes
P = exp(S - lse) from the stored lse, and with D_i = rowsum(dO_i * O_i) (equal to
rowsum(P_i * dP_i), but computed once from two (Tq, d) arrays):

    dV_j = P^T dO,  dP = dO V_j^T,  dS = P * (dP - D),  dQ += scale dS K_j,  dK_j = scale dS^T Q

How the work is laid out, and why (measured on this 2-core machine for B*H = 256, T = 77,
d = 64, float32, forward, median of 25 calls; other jobs share the machine, so +-20%):
- @njit(parallel=True) over (b, h), the matmuls as Numba loops: 19 ms. LLVM's loops reach about
  25 GFLOP/s, and @njit cannot call BLAS without SciPy.
- each tile for all heads at once, NumPy's batched matmul (OpenBLAS, ~90 GFLOP/s) and an
  @njit(parallel=True) online-softmax loop between the matmuls: 9 ms.
- the same for groups of 32 heads spread over a pool of threads: 6.7 ms. NumPy's matmul and
  ufuncs release the GIL, so one thread's exp overlaps the other's matrix product.
- the softmax step as NumPy array operations instead of the Numba loop: 6.6 ms, against 8.7 ms
  for torch's scaled_dot_product_attention in the same run (forward + backward: 19 ms against
  29 ms). Numba has no vector exp here (no SVML), so math.exp runs one element at a time: 3.7 ms
  per 1.5M elements, against 0.74 ms for NumPy's SIMD exp. This is the design, so this file uses
  Numba only for its thread count; the loops that pay in Numba are conv2d's im2col and AdamW.
q, k and v may be strided views (the heads of one fused q/k/v projection, (B, T, 3, H, d)
permuted to (B, H, T, d)): NumPy's matmul hands a matrix with contiguous rows to BLAS with its
row stride, so they are not copied (a copy of q, k, v cost ~6% of a tiny-vit-s training step).
The outputs may be such views too (out=, dq=, dk=, dv=): multi-head attention wants o as
(B, T, H, d), the heads side by side, and dq, dk, dv side by side in one (B, T, 3, H, d) array,
the gradient of the fused projection. The kernel writes into the caller's arrays through views
(o[b], dk[:, :, j0:j1]) with out= (np.divide, np.matmul), so those layouts are filled directly
and nothing is copied or concatenated afterwards. It writes each output element once: an
elementwise pass over such a strided view runs ~4x slower than over a contiguous array (x *= 2
on (8, 4, 65, 64) float32: 38 against 8.5 us), so the accumulators O and dQ, updated once per key
tile, are contiguous arrays of one head group, written out at the end.
Bc = 128 measured faster than 64 (6.6 against 8.4 ms): CLIP's 77 tokens fit in one key tile,
longer sequences take several (the tests use Bc = 8 to exercise the rescaling by alpha). On the
CPU a "query tile" is every query row of a group (Br = Tq): the threads already have the head
groups to share, and S is (heads, Tq, Bc), so memory still grows linearly in Tq.

Checked against reference.py (forward and backward, float32 and float64, with
and without masks) in tests/kernels/test_attention.py.
"""
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from . import checks

Bc = 128                # keys per tile: CLIP's 77 tokens take one (see the docstring)
HEADS_PER_TASK = 32     # one thread's share of the heads: measured best of 16, 32 and 64

_pool = None


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


def _key_tile(q, mask, is_causal, j0, j1):
    """The additive mask for keys j0:j1 (None when nothing is masked), broadcastable to S."""
    if is_causal:
        Tq = q.shape[2]
        i = np.arange(Tq)[:, None]
        j = np.arange(j0, j1)[None, :]
        return np.where(j > i, -np.inf, 0.0).astype(q.dtype)      # (Tq, Bc): key j is in query i's future
    if mask is None:
        return None
    return mask if mask.shape[3] == 1 else mask[..., j0:j1]


def _transposed(x):
    # NumPy's batched matmul calls BLAS only for row-major operands: copying the transpose once
    # is twice as fast as multiplying by a transposed view (measured).
    return np.ascontiguousarray(x.swapaxes(-1, -2))


# --- forward -------------------------------------------------------------------------------

def _forward_group(q, k, v, scale, is_causal, mask, o, lse, Bc):
    """FlashAttention-2 forward for a few batch entries, all their heads at once."""
    G, H, Tq, d = q.shape
    Tk = k.shape[2]
    Q = q * scale                                       # (G, H, Tq, d): S = (scale Q) K^T
    Kt = _transposed(k)                                 # (G, H, d, Tk)
    m = np.full((G, H, Tq, 1), -np.inf, q.dtype)        # running row max
    l = np.zeros((G, H, Tq, 1), q.dtype)                # running row sum of exp(S - m)
    O = np.zeros((G, H, Tq, d), q.dtype)                # unnormalised output
    for j0 in range(0, Tk, Bc):
        j1 = min(j0 + Bc, Tk)
        if is_causal and j0 > Tq - 1:                   # every query is before every key of the tile
            break
        S = Q @ Kt[..., j0:j1]                          # (G, H, Tq, Bc)
        bias = _key_tile(q, mask, is_causal, j0, j1)
        if bias is not None:
            S += bias
        m_new = np.maximum(m, S.max(axis=-1, keepdims=True))
        # A row whose keys so far are all masked has m_new = -inf: subtracting 0 instead keeps
        # its P at exp(-inf) = 0, where exp(-inf - -inf) would be NaN. (m itself stays -inf, so
        # the next tile's max is the true one.)
        m_shift = np.where(m_new == -np.inf, 0, m_new)
        S -= m_shift
        P = np.exp(S, out=S)                            # (G, H, Tq, Bc), in S's memory
        alpha = np.exp(m - m_shift)                     # rescales what was summed under the old max
        l *= alpha
        l += P.sum(axis=-1, keepdims=True)
        O *= alpha
        O += P @ v[:, :, j0:j1]                         # (G, H, Tq, d)
        m = m_new
    np.divide(O, l, out=o)                              # the one write into o (maybe a strided view)
    lse[...] = (m + np.log(l))[..., 0]


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

def _backward_group(q, k, v, o, lse, do, scale, is_causal, mask, dq, dk, dv, Bc):
    """FlashAttention-2 backward for a few batch entries, all their heads at once."""
    G, H, Tq, d = q.shape
    Tk = k.shape[2]
    Q = q * scale                                       # (G, H, Tq, d)
    Kt, Vt = _transposed(k), _transposed(v)             # (G, H, d, Tk)
    D = np.sum(do * o, axis=-1, keepdims=True)          # (G, H, Tq, 1)
    dQ = np.zeros((G, H, Tq, d), q.dtype)               # dq / scale, summed over the key tiles
    for j0 in range(0, Tk, Bc):
        j1 = min(j0 + Bc, Tk)
        if is_causal and j0 > Tq - 1:                   # no query attends to these keys
            dk[:, :, j0:] = 0
            dv[:, :, j0:] = 0
            break
        S = Q @ Kt[..., j0:j1]                          # (G, H, Tq, Bc)
        bias = _key_tile(q, mask, is_causal, j0, j1)
        if bias is not None:
            S += bias
        S -= lse[..., None]
        P = np.exp(S, out=S)                            # the forward's softmax, recomputed from lse
        np.matmul(_transposed(P), do, out=dv[:, :, j0:j1])          # (G, H, Bc, d)
        dP = do @ Vt[..., j0:j1]                        # (G, H, Tq, Bc)
        dP -= D
        dS = np.multiply(P, dP, out=dP)                 # dS = P * (dP - D)
        dQ += dS @ k[:, :, j0:j1]                       # (G, H, Tq, d)
        np.matmul(_transposed(dS), Q, out=dk[:, :, j0:j1])          # (G, H, Bc, d): dS^T (scale Q)
    np.multiply(dQ, scale, out=dq)                      # the one write into dq


def attention_backward(q, k, v, o, lse, do, scale, is_causal=False, mask=None, dq=None, dk=None, dv=None,
                       Bc=Bc):
    """Flash attention backward on NumPy arrays: returns (dq, dk, dv), each the array passed for
    it when there is one (any view of the input's shape, written in place), else a new array."""
    q, k, v, o, lse, do, mask = checks.backward_inputs(q, k, v, o, lse, do, is_causal, mask, rows_only=True)
    for name, given, like in (("dq", dq, q), ("dk", dk, k), ("dv", dv, v)):
        checks.output(name, given, like)
    B, H, Tq, d = q.shape
    dq = np.empty(q.shape, q.dtype) if dq is None else dq       # (B, H, Tq, d)
    dk = np.empty(k.shape, k.dtype) if dk is None else dk       # (B, H, Tk, d)
    dv = np.empty(v.shape, v.dtype) if dv is None else dv

    def task(b):
        _backward_group(q[b], k[b], v[b], o[b], lse[b], do[b], q.dtype.type(scale), is_causal,
                        _batch(mask, b), dq[b], dk[b], dv[b], Bc)
    _map_over_batch(task, B, H)
    return dq, dk, dv
