"""Flash attention in numba.cuda: every version kept and numbered (llm.c style), each tested against reference.py.

The math is in numba_cpu.py's docstring (FlashAttention-2: online softmax with running max m and
sum l, lse = m + log l stored per row; the backward recomputes P = exp(S - lse) with
D = rowsum(dO * O)). Every kernel takes q (B, H, Tq, d), k and v (B, H, Tk, d), a 4-D additive
mask broadcast by clamping each index to its size - 1 (a (1, 1, 1, 1) zero mask when there is none).

Versions
  v1  naive: one thread per query row walks over every key with the online softmax, its output
      row in a local array (forward). Backward: one thread per key row sums dK_j and dV_j over
      all queries, one thread per query row sums dQ_i over all keys. Every score is a dot product
      read from global memory; nothing is shared between threads.
  v2  FlashAttention-2 tiles: one block of Br x Bc threads per (b, h, tile of Br queries). The
      query tile is loaded into shared memory once; each key tile, then value tile, is loaded
      once per block and read by all Br query rows (Br times less global traffic than v1). The
      thread (i, j) computes one score of the Br x Bc tile; row max and row sum are read from
      the tile in shared memory; each thread owns the output columns c = j, j + Bc, ... of row i.
      Backward as in the paper: one block per key tile accumulates dK_j, dV_j over the query
      tiles, and a second kernel, one block per query tile, accumulates dQ_i over the key tiles
      (two kernels recompute S twice, but need no atomics, so dQ is deterministic).
      Shared tiles are (rows, d + 1): the padding column puts the threads of a warp, which read
      column c of consecutive rows, in different memory banks.

Output arrays passed in (out=, dq=, dk=, dv=; say the heads of a (B, T, H, d) array, transposed)
receive one copy of the kernel's C-contiguous result (checks.write_into): the kernels are launched
on C-contiguous arrays only (the layout tests/kernels/test_attention.py compiles them for).

Numba's CUDA simulator has no warp shuffles, so every reduction here goes through shared memory.
Shared and local arrays need their shapes and dtype at compile time, so the kernels are built
by `_kernels(dtype, d, Br, Bc)` once per combination and cached.
"""
import functools
import math
from types import SimpleNamespace

import numba
import numpy as np
from numba import cuda

from miniclip.backend import get_array_module

from ..cuda_launch import launch
from . import checks

MAX_HEAD_DIM = 128      # the tiles of a block must fit in 48 KB of static shared memory


def default_tiles(dtype):
    """(Br, Bc): 16 x 16 for float32, 8 x 8 for float64, so four (16, 129) float32 tiles fit in 48 KB."""
    return (16, 16) if np.dtype(dtype).itemsize == 4 else (8, 8)


@functools.lru_cache(maxsize=None)
def _kernels(dtype, d, Br, Bc):
    float_t = numba.from_dtype(dtype)
    ZERO = dtype.type(0)
    ONE = dtype.type(1)
    NEG_INF = dtype.type(-np.inf)
    d_pad = d + 1                              # shared tiles' row length (see the docstring)
    d_per_row_thread = (d + Bc - 1) // Bc      # output columns per thread when Bc threads share a row
    d_per_col_thread = (d + Br - 1) // Br      # when Br threads share a key row

    @cuda.jit(device=True)
    def mask_at(mask, b, h, i, j):
        return mask[min(b, mask.shape[0] - 1), min(h, mask.shape[1] - 1),
                    min(i, mask.shape[2] - 1), min(j, mask.shape[3] - 1)]

    # --- v1: one thread per row ------------------------------------------------------------

    @cuda.jit
    def forward_v1(q, k, v, scale, is_causal, mask, o, lse):
        B, H, Tq, _ = q.shape
        Tk = k.shape[2]
        row = cuda.grid(1)
        if row >= B * H * Tq:
            return
        b, h, i = row // (H * Tq), (row // Tq) % H, row % Tq
        acc = cuda.local.array(d, float_t)       # O_i, unnormalised
        for c in range(d):
            acc[c] = ZERO
        m = NEG_INF
        l = ZERO
        n_keys = min(Tk, i + 1) if is_causal else Tk
        for j in range(n_keys):
            s = ZERO
            for c in range(d):
                s += q[b, h, i, c] * k[b, h, j, c]
            s = s * scale + mask_at(mask, b, h, i, j)
            if s == NEG_INF:                     # a masked key adds nothing (and exp(-inf - -inf) is NaN)
                continue
            m_new = max(m, s)
            alpha = math.exp(m - m_new)
            p = math.exp(s - m_new)
            l = alpha * l + p
            for c in range(d):
                acc[c] = alpha * acc[c] + p * v[b, h, j, c]
            m = m_new
        for c in range(d):
            o[b, h, i, c] = acc[c] / l
        lse[b, h, i] = m + math.log(l)

    @cuda.jit
    def rowsum_do_o(do, o, D):
        """D_i = rowsum(dO_i * O_i), one thread per row (used by v1 and v2)."""
        B, H, Tq, _ = o.shape
        row = cuda.grid(1)
        if row >= B * H * Tq:
            return
        b, h, i = row // (H * Tq), (row // Tq) % H, row % Tq
        total = ZERO
        for c in range(d):
            total += do[b, h, i, c] * o[b, h, i, c]
        D[b, h, i] = total

    @cuda.jit(device=True)
    def probability_and_ds(q, k, v, lse, D, do, scale, mask, b, h, i, j):
        """P_ij = exp(S_ij - lse_i) and dS_ij = P_ij (dP_ij - D_i), read from global memory (v1)."""
        s = ZERO
        dp = ZERO
        for c in range(d):
            s += q[b, h, i, c] * k[b, h, j, c]
            dp += do[b, h, i, c] * v[b, h, j, c]
        s = s * scale + mask_at(mask, b, h, i, j)     # the callers' loops skip causally masked keys
        p = math.exp(s - lse[b, h, i])
        return p, p * (dp - D[b, h, i])

    @cuda.jit
    def backward_dkdv_v1(q, k, v, lse, D, do, scale, is_causal, mask, dk, dv):
        B, H, Tk, _ = k.shape
        Tq = q.shape[2]
        row = cuda.grid(1)
        if row >= B * H * Tk:
            return
        b, h, j = row // (H * Tk), (row // Tk) % H, row % Tk
        dk_j = cuda.local.array(d, float_t)
        dv_j = cuda.local.array(d, float_t)
        for c in range(d):
            dk_j[c] = ZERO
            dv_j[c] = ZERO
        for i in range(j if is_causal else 0, Tq):       # causal: queries before j never see key j
            p, ds = probability_and_ds(q, k, v, lse, D, do, scale, mask, b, h, i, j)
            for c in range(d):
                dv_j[c] += p * do[b, h, i, c]
                dk_j[c] += ds * q[b, h, i, c]
        for c in range(d):
            dk[b, h, j, c] = dk_j[c] * scale
            dv[b, h, j, c] = dv_j[c]

    @cuda.jit
    def backward_dq_v1(q, k, v, lse, D, do, scale, is_causal, mask, dq):
        B, H, Tq, _ = q.shape
        Tk = k.shape[2]
        row = cuda.grid(1)
        if row >= B * H * Tq:
            return
        b, h, i = row // (H * Tq), (row // Tq) % H, row % Tq
        dq_i = cuda.local.array(d, float_t)
        for c in range(d):
            dq_i[c] = ZERO
        for j in range(min(Tk, i + 1) if is_causal else Tk):
            p, ds = probability_and_ds(q, k, v, lse, D, do, scale, mask, b, h, i, j)
            for c in range(d):
                dq_i[c] += ds * k[b, h, j, c]
        for c in range(d):
            dq[b, h, i, c] = dq_i[c] * scale

    # --- v2: tiles in shared memory ----------------------------------------------------------

    @cuda.jit(device=True)
    def load_tile(tile, x, b, h, row0, factor):
        """tile[r, c] = factor * x[b, h, row0 + r, c] (zero past the end), by all threads of the block."""
        n_threads = cuda.blockDim.x * cuda.blockDim.y
        tid = cuda.threadIdx.y * cuda.blockDim.x + cuda.threadIdx.x
        n_rows = x.shape[2]
        for idx in range(tid, tile.shape[0] * d, n_threads):
            r, c = idx // d, idx % d
            tile[r, c] = x[b, h, row0 + r, c] * factor if row0 + r < n_rows else ZERO

    @cuda.jit(device=True)
    def tile_dot(A, a, Bt, bt):
        """Row a of the shared tile A times row bt of the shared tile Bt, over the head dim."""
        total = ZERO
        for c in range(d):
            total += A[a, c] * Bt[bt, c]
        return total

    @cuda.jit
    def forward_v2(q, k, v, scale, is_causal, mask, o, lse):
        # grid (B * H, query tiles); block (Bc, Br): thread (tx, ty) = (key j, query i) in the tile
        B, H, Tq, _ = q.shape
        Tk = k.shape[2]
        b, h = cuda.blockIdx.x // H, cuda.blockIdx.x % H
        i0 = cuda.blockIdx.y * Br
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        i = i0 + ty
        Q_tile = cuda.shared.array((Br, d_pad), float_t)
        KV_tile = cuda.shared.array((Bc, d_pad), float_t)    # K_j, then V_j, of the current key tile
        S_tile = cuda.shared.array((Br, Bc), float_t)         # scores, then probabilities
        acc = cuda.local.array(d_per_row_thread, float_t)     # O_i[tx], O_i[tx + Bc], ...
        for n in range(d_per_row_thread):
            acc[n] = ZERO
        m = NEG_INF
        l = ZERO
        load_tile(Q_tile, q, b, h, i0, scale)
        # causal: keys after the tile's last query are masked for every row of the block
        j_end = min(Tk, i0 + Br) if is_causal else Tk
        for j0 in range(0, j_end, Bc):
            cuda.syncthreads()                    # everyone is done with the previous V tile
            load_tile(KV_tile, k, b, h, j0, ONE)
            cuda.syncthreads()
            j = j0 + tx
            s = NEG_INF
            if i < Tq and j < Tk and not (is_causal and j > i):
                s = tile_dot(Q_tile, ty, KV_tile, tx) + mask_at(mask, b, h, i, j)
            S_tile[ty, tx] = s
            cuda.syncthreads()
            m_new = m
            for jj in range(Bc):                  # each thread of row i reads the whole row
                m_new = max(m_new, S_tile[ty, jj])
            if m_new == NEG_INF:                  # every key so far is masked: nothing to add
                p = ZERO
                alpha = ONE
            else:
                p = math.exp(s - m_new)
                alpha = math.exp(m - m_new)
            cuda.syncthreads()                    # the row is read before it becomes P, and K before V
            S_tile[ty, tx] = p
            load_tile(KV_tile, v, b, h, j0, ONE)
            cuda.syncthreads()
            row_sum = ZERO
            for jj in range(Bc):
                row_sum += S_tile[ty, jj]
            l = alpha * l + row_sum
            for n in range(d_per_row_thread):
                c = tx + n * Bc
                if c < d:
                    pv = ZERO
                    for jj in range(Bc):
                        pv += S_tile[ty, jj] * KV_tile[jj, c]
                    acc[n] = alpha * acc[n] + pv
            m = m_new
        if i < Tq:
            for n in range(d_per_row_thread):
                c = tx + n * Bc
                if c < d:
                    o[b, h, i, c] = acc[n] / l
            if tx == 0:
                lse[b, h, i] = m + math.log(l)

    @cuda.jit(device=True)
    def tile_p_and_ds(Q_tile, dO_tile, K_tile, V_tile, lse, D, is_causal, mask, b, h, i, j, Tq, Tk, ty, tx):
        """P_ij and dS_ij of one thread's entry of the tile (0 outside the matrix or masked)."""
        if i >= Tq or j >= Tk or (is_causal and j > i):
            return ZERO, ZERO
        s = tile_dot(Q_tile, ty, K_tile, tx) + mask_at(mask, b, h, i, j)
        p = math.exp(s - lse[b, h, i])
        dp = tile_dot(dO_tile, ty, V_tile, tx)
        return p, p * (dp - D[b, h, i])

    @cuda.jit
    def backward_dkdv_v2(q, k, v, lse, D, do, scale, is_causal, mask, dk, dv):
        # grid (B * H, key tiles); block (Bc, Br): thread (tx, ty) = (key j, query i) of a tile;
        # the thread owns dK_j, dV_j columns ty, ty + Br, ...
        B, H, Tq, _ = q.shape
        Tk = k.shape[2]
        b, h = cuda.blockIdx.x // H, cuda.blockIdx.x % H
        j0 = cuda.blockIdx.y * Bc
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        j = j0 + tx
        K_tile = cuda.shared.array((Bc, d_pad), float_t)
        V_tile = cuda.shared.array((Bc, d_pad), float_t)
        Q_tile = cuda.shared.array((Br, d_pad), float_t)     # scale * Q_i
        dO_tile = cuda.shared.array((Br, d_pad), float_t)
        P_tile = cuda.shared.array((Br, Bc), float_t)
        dS_tile = cuda.shared.array((Br, Bc), float_t)
        dk_j = cuda.local.array(d_per_col_thread, float_t)
        dv_j = cuda.local.array(d_per_col_thread, float_t)
        for n in range(d_per_col_thread):
            dk_j[n] = ZERO
            dv_j[n] = ZERO
        load_tile(K_tile, k, b, h, j0, ONE)
        load_tile(V_tile, v, b, h, j0, ONE)
        # causal: query tiles that end before key j0 see none of these keys
        i_start = (j0 // Br) * Br if is_causal else 0
        for i0 in range(i_start, Tq, Br):
            i = i0 + ty
            cuda.syncthreads()                    # everyone is done with the previous Q, dO, P, dS
            load_tile(Q_tile, q, b, h, i0, scale)
            load_tile(dO_tile, do, b, h, i0, ONE)
            cuda.syncthreads()
            p, ds = tile_p_and_ds(Q_tile, dO_tile, K_tile, V_tile, lse, D, is_causal, mask,
                                  b, h, i, j, Tq, Tk, ty, tx)
            P_tile[ty, tx] = p
            dS_tile[ty, tx] = ds
            cuda.syncthreads()
            for n in range(d_per_col_thread):
                c = ty + n * Br
                if c < d:
                    for ii in range(Br):
                        dv_j[n] += P_tile[ii, tx] * dO_tile[ii, c]       # dV_j = P^T dO
                        dk_j[n] += dS_tile[ii, tx] * Q_tile[ii, c]       # dK_j = dS^T (scale Q)
        if j < Tk:
            for n in range(d_per_col_thread):
                c = ty + n * Br
                if c < d:
                    dk[b, h, j, c] = dk_j[n]
                    dv[b, h, j, c] = dv_j[n]

    @cuda.jit
    def backward_dq_v2(q, k, v, lse, D, do, scale, is_causal, mask, dq):
        # grid (B * H, query tiles); block (Bc, Br): the thread owns dQ_i columns tx, tx + Bc, ...
        B, H, Tq, _ = q.shape
        Tk = k.shape[2]
        b, h = cuda.blockIdx.x // H, cuda.blockIdx.x % H
        i0 = cuda.blockIdx.y * Br
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        i = i0 + ty
        Q_tile = cuda.shared.array((Br, d_pad), float_t)
        dO_tile = cuda.shared.array((Br, d_pad), float_t)
        K_tile = cuda.shared.array((Bc, d_pad), float_t)
        V_tile = cuda.shared.array((Bc, d_pad), float_t)
        dS_tile = cuda.shared.array((Br, Bc), float_t)
        dq_i = cuda.local.array(d_per_row_thread, float_t)
        for n in range(d_per_row_thread):
            dq_i[n] = ZERO
        load_tile(Q_tile, q, b, h, i0, scale)
        load_tile(dO_tile, do, b, h, i0, ONE)
        j_end = min(Tk, i0 + Br) if is_causal else Tk
        for j0 in range(0, j_end, Bc):
            j = j0 + tx
            cuda.syncthreads()                    # everyone is done with the previous K, V, dS
            load_tile(K_tile, k, b, h, j0, ONE)
            load_tile(V_tile, v, b, h, j0, ONE)
            cuda.syncthreads()
            p, ds = tile_p_and_ds(Q_tile, dO_tile, K_tile, V_tile, lse, D, is_causal, mask,
                                  b, h, i, j, Tq, Tk, ty, tx)
            dS_tile[ty, tx] = ds
            cuda.syncthreads()
            for n in range(d_per_row_thread):
                c = tx + n * Bc
                if c < d:
                    for jj in range(Bc):
                        dq_i[n] += dS_tile[ty, jj] * K_tile[jj, c]      # dQ_i = dS K (times scale)
        if i < Tq:
            for n in range(d_per_row_thread):
                c = tx + n * Bc
                if c < d:
                    dq[b, h, i, c] = dq_i[n] * scale

    return SimpleNamespace(forward_v1=forward_v1, rowsum_do_o=rowsum_do_o, backward_dkdv_v1=backward_dkdv_v1,
                           backward_dq_v1=backward_dq_v1, forward_v2=forward_v2,
                           backward_dkdv_v2=backward_dkdv_v2, backward_dq_v2=backward_dq_v2)


# --- wrappers: the same code launches on CuPy arrays (GPU) and NumPy arrays (simulator) ------

THREADS_PER_BLOCK = 128


def _prepare(q, k, v, is_causal, mask):
    q, k, v, mask = checks.forward_inputs(q, k, v, is_causal, mask)
    if q.shape[3] > MAX_HEAD_DIM:
        raise ValueError(f"attention (numba_cuda): head dim d = {q.shape[3]} is above {MAX_HEAD_DIM}, "
                         "the most whose tiles fit in a block's shared memory")
    xp = get_array_module(q)
    if mask is None:
        mask = xp.zeros((1, 1, 1, 1), q.dtype)            # adding 0: one code path for every kernel
    return q, k, v, mask


def _blocks(n):
    return (n + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK


def tile_grid(B, H, T, rows_per_tile):
    """v2's grid: (B * H, tiles of T rows). B * H goes on x, which takes up to 2^31 - 1 blocks:
    gridDim.y stops at 65,535, which B * H passes at ViT-B/32's 12 heads from batch 5,462."""
    return B * H, (T + rows_per_tile - 1) // rows_per_tile


def attention_forward_v1(q, k, v, scale, is_causal=False, mask=None, out=None):
    """v1: one thread per query row. Returns (o, lse), o copied into `out` when it is given."""
    q, k, v, mask = _prepare(q, k, v, is_causal, mask)
    checks.output("out", out, q)
    xp = get_array_module(q)
    B, H, Tq, d = q.shape
    o = xp.empty_like(q)
    lse = xp.empty((B, H, Tq), q.dtype)
    K = _kernels(q.dtype, d, 1, 1)
    launch(K.forward_v1, _blocks(B * H * Tq), THREADS_PER_BLOCK, q, k, v, q.dtype.type(scale), bool(is_causal), mask, o, lse)
    return checks.write_into(out, o), lse


def attention_forward_v2(q, k, v, scale, is_causal=False, mask=None, out=None, Br=None, Bc=None):
    """v2: one block of Br x Bc threads per (b, h, query tile). Returns (o, lse), o copied into
    `out` when it is given."""
    q, k, v, mask = _prepare(q, k, v, is_causal, mask)
    checks.output("out", out, q)
    xp = get_array_module(q)
    B, H, Tq, d = q.shape
    Br, Bc = (Br, Bc) if Br and Bc else default_tiles(q.dtype)
    o = xp.empty_like(q)
    lse = xp.empty((B, H, Tq), q.dtype)
    K = _kernels(q.dtype, d, Br, Bc)
    launch(K.forward_v2, tile_grid(B, H, Tq, Br), (Bc, Br), q, k, v, q.dtype.type(scale), bool(is_causal), mask, o, lse)
    return checks.write_into(out, o), lse


def _backward_prepare(q, k, v, o, lse, do, is_causal, mask, dq, dk, dv):
    q, k, v, o, lse, do, mask = checks.backward_inputs(q, k, v, o, lse, do, is_causal, mask)
    q, k, v, mask = _prepare(q, k, v, is_causal, mask)
    checks.gradient_outputs(dq, dk, dv, q, k, v)
    xp = get_array_module(q)
    B, H, Tq, d = q.shape
    D = xp.empty((B, H, Tq), q.dtype)
    launch(_kernels(q.dtype, d, 1, 1).rowsum_do_o, _blocks(B * H * Tq), THREADS_PER_BLOCK, do, o, D)
    return q, k, v, lse, D, do, mask


def attention_backward_v1(q, k, v, o, lse, do, scale, is_causal=False, mask=None, dq=None, dk=None, dv=None):
    """v1: one thread per key row (dK, dV) and one per query row (dQ). Returns (dq, dk, dv),
    each copied into the array given for it, if any."""
    q, k, v, lse, D, do, mask = _backward_prepare(q, k, v, o, lse, do, is_causal, mask, dq, dk, dv)
    xp = get_array_module(q)
    B, H, Tq, d = q.shape
    Tk = k.shape[2]
    dQ, dK, dV = xp.empty_like(q), xp.empty_like(k), xp.empty_like(v)
    K = _kernels(q.dtype, d, 1, 1)
    args = (q, k, v, lse, D, do, q.dtype.type(scale), bool(is_causal), mask)
    launch(K.backward_dkdv_v1, _blocks(B * H * Tk), THREADS_PER_BLOCK, *args, dK, dV)
    launch(K.backward_dq_v1, _blocks(B * H * Tq), THREADS_PER_BLOCK, *args, dQ)
    return checks.write_into(dq, dQ), checks.write_into(dk, dK), checks.write_into(dv, dV)


def attention_backward_v2(q, k, v, o, lse, do, scale, is_causal=False, mask=None, dq=None, dk=None, dv=None,
                          Br=None, Bc=None):
    """v2: a block per key tile for dK, dV and a block per query tile for dQ. Returns (dq, dk, dv),
    each copied into the array given for it, if any."""
    q, k, v, lse, D, do, mask = _backward_prepare(q, k, v, o, lse, do, is_causal, mask, dq, dk, dv)
    xp = get_array_module(q)
    B, H, Tq, d = q.shape
    Tk = k.shape[2]
    Br, Bc = (Br, Bc) if Br and Bc else default_tiles(q.dtype)
    dQ, dK, dV = xp.empty_like(q), xp.empty_like(k), xp.empty_like(v)
    K = _kernels(q.dtype, d, Br, Bc)
    args = (q, k, v, lse, D, do, q.dtype.type(scale), bool(is_causal), mask)
    launch(K.backward_dkdv_v2, tile_grid(B, H, Tk, Bc), (Bc, Br), *args, dK, dV)
    launch(K.backward_dq_v2, tile_grid(B, H, Tq, Br), (Bc, Br), *args, dQ)
    return checks.write_into(dq, dQ), checks.write_into(dk, dK), checks.write_into(dv, dV)


VERSIONS = {1: (attention_forward_v1, attention_backward_v1),
            2: (attention_forward_v2, attention_backward_v2)}
attention_forward = attention_forward_v2          # the newest version: what the dispatch calls
attention_backward = attention_backward_v2
