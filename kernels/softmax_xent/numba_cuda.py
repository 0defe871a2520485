"""Softmax cross-entropy and the CLIP loss as numba.cuda kernels, every version kept.

The math is in reference.py; the one-pass (m, l) trick is in numba_cpu.py. A GPU adds one
question: which thread reads which logit. Versions (the wrappers take `version=`):

softmax_xent (rows of length C, N rows)
    v1  one thread per row, looping over its C logits. Naive: neighbouring threads read
        addresses C apart (uncoalesced), and N threads may be too few to fill the GPU.
    v2  one block per row. Thread k reads columns k, k + T, k + 2T, ... (neighbours read
        neighbours: coalesced), keeps its own (m, l), and a shared-memory tree reduction
        merges the T pairs:  m = max(m1, m2),  l = l1 exp(m1 - m) + l2 exp(m2 - m).
    v3  several rows per block: a (lanes, rows) block gives each row `lanes` threads (at most
        a warp). Short rows (C = 5, 13, 256) no longer leave most of a block idle, and fewer,
        fuller blocks keep more threads resident per multiprocessor.
    backward: v1 one thread per row; v2 and v3 one thread per logit, exp(x - lse) needing no
        reduction at all once lse is saved.

clip_loss (a square B x B logits matrix, rows and columns both softmaxed)
    v1  one thread per row and one per column (2B threads), each writes its lse and adds its
        share of the loss atomically. The column threads read coalesced, the row threads don't;
        S is read twice. Backward: one thread per element, one atomic add per element for
        dscale (B^2 atomics on one address: the slow part).
    v2  one pass over S: block b takes a tile of ROWS rows; thread k walks columns k, k + T, ...
        and for each column reads the tile's ROWS values (coalesced), updating the column's
        (m, l) in a register and each row's (m, l) in shared memory. The rows' T partial pairs
        are tree-merged in the block; the columns' partial pairs (one per tile) are merged by a
        second, small kernel. Backward: each block tree-sums its dscale parts, one atomic per block.

The simulator has no warp shuffles, so every reduction is a shared-memory tree (cupy_raw.py
shows the warp-shuffle version in CUDA C). Accumulators are float64 (see reference.py); on a GPU
with slow float64 units you would keep float32 here and pay in accuracy at |x| ~ 1e4.

Each wrapper allocates with xp = get_array_module(logits), so it runs on CuPy arrays on a GPU and
on NumPy arrays in Numba's simulator: tests/kernels/test_softmax_xent.py runs every version
against reference.py that way.
"""
import math

from numba import cuda, float64

from miniclip.backend import get_array_module

from ..cuda_launch import launch

MAX_THREADS = 256      # the shared arrays' size: a block has at most this many threads
ROWS = 8               # clip_loss v2: rows per tile


@cuda.jit(device=True)
def online_update(m, l, x):
    """Fold one logit x into the running (max, sum of exp) pair."""
    x = float64(x)      # float32 logits too: the simulator (plain Python) would keep a float32 max
    if x > m:
        return x, l * math.exp(m - x) + 1.0
    return m, l + math.exp(x - m)


@cuda.jit(device=True)
def merge(m1, l1, m2, l2):
    """Combine the (m, l) statistics of two disjoint parts of a row or column."""
    m = max(m1, m2)
    if m == -math.inf:          # both parts empty (threads past the row's end)
        return m, 0.0
    return m, l1 * math.exp(m1 - m) + l2 * math.exp(m2 - m)


@cuda.jit(device=True)
def tree_merge(sm_m, sm_l, base, lane, width):
    """Merge the `width` (a power of two) pairs sm[base : base + width] into sm[base].

    Each step halves the active threads: lane k takes in lane k + s. Every thread of the block
    must call this (it contains barriers), even those with nothing to merge.
    """
    s = width // 2
    while s > 0:
        if lane < s:
            sm_m[base + lane], sm_l[base + lane] = merge(sm_m[base + lane], sm_l[base + lane],
                                                         sm_m[base + lane + s], sm_l[base + lane + s])
        cuda.syncthreads()
        s //= 2


# ---------------------------------------------------------------- softmax_xent forward
@cuda.jit
def softmax_xent_forward_v1(logits, targets, loss, lse):
    i = cuda.grid(1)
    if i < logits.shape[0]:
        m, l = -math.inf, 0.0
        for j in range(logits.shape[1]):
            m, l = online_update(m, l, logits[i, j])
        lse[i] = m + math.log(l)
        loss[i] = lse[i] - logits[i, targets[i]]


@cuda.jit
def softmax_xent_forward_v2(logits, targets, loss, lse):
    i = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    sm_m = cuda.shared.array(MAX_THREADS, float64)
    sm_l = cuda.shared.array(MAX_THREADS, float64)
    m, l = -math.inf, 0.0
    for j in range(tid, logits.shape[1], cuda.blockDim.x):
        m, l = online_update(m, l, logits[i, j])
    sm_m[tid], sm_l[tid] = m, l
    cuda.syncthreads()
    tree_merge(sm_m, sm_l, 0, tid, cuda.blockDim.x)
    if tid == 0:
        lse[i] = sm_m[0] + math.log(sm_l[0])
        loss[i] = lse[i] - logits[i, targets[i]]


@cuda.jit
def softmax_xent_forward_v3(logits, targets, loss, lse):
    lane, lanes = cuda.threadIdx.x, cuda.blockDim.x
    i = cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y        # this thread's row
    base = cuda.threadIdx.y * lanes                                 # its row's slice of sm
    sm_m = cuda.shared.array(MAX_THREADS, float64)
    sm_l = cuda.shared.array(MAX_THREADS, float64)
    m, l = -math.inf, 0.0
    if i < logits.shape[0]:
        for j in range(lane, logits.shape[1], lanes):
            m, l = online_update(m, l, logits[i, j])
    sm_m[base + lane], sm_l[base + lane] = m, l
    cuda.syncthreads()
    tree_merge(sm_m, sm_l, base, lane, lanes)      # rows past N merge empty pairs, harmlessly
    if lane == 0 and i < logits.shape[0]:
        lse[i] = sm_m[base] + math.log(sm_l[base])
        loss[i] = lse[i] - logits[i, targets[i]]


# ---------------------------------------------------------------- softmax_xent backward
@cuda.jit
def softmax_xent_backward_v1(logits, targets, lse, dy, dlogits):
    i = cuda.grid(1)
    if i < logits.shape[0]:
        for j in range(logits.shape[1]):
            dlogits[i, j] = math.exp(logits[i, j] - lse[i]) * dy[i]
        dlogits[i, targets[i]] -= dy[i]


@cuda.jit
def softmax_xent_backward_v2(logits, targets, lse, dy, dlogits):
    k = cuda.grid(1)
    N, C = logits.shape
    if k < N * C:
        i, j = k // C, k % C
        onehot = 1.0 if j == targets[i] else 0.0
        dlogits[i, j] = (math.exp(logits[i, j] - lse[i]) - onehot) * dy[i]


def _check_threads(threads):
    if threads > MAX_THREADS or threads & (threads - 1):
        raise ValueError(f"threads={threads}: need a power of two <= {MAX_THREADS} "
                         "(the tree reduction halves it)")


def softmax_xent_forward(logits, targets, version=3, threads=128):
    """(loss (N,) in the logits' dtype, lse (N,) float64), with kernel `version` 1, 2 or 3."""
    _check_threads(threads)
    xp = get_array_module(logits)
    N, C = logits.shape
    loss = xp.empty(N, logits.dtype)
    lse = xp.empty(N, xp.float64)
    if version == 1:
        launch(softmax_xent_forward_v1, (N + threads - 1) // threads, threads, logits, targets, loss, lse)
    elif version == 2:
        launch(softmax_xent_forward_v2, N, threads, logits, targets, loss, lse)
    elif version == 3:
        lanes = min(32, threads, 1 << (C - 1).bit_length())     # a power of two >= C, at most a warp
        rows = threads // lanes
        launch(softmax_xent_forward_v3, (N + rows - 1) // rows, (lanes, rows), logits, targets, loss, lse)
    else:
        raise ValueError(f"softmax_xent_forward: no version {version} (have 1, 2, 3)")
    return loss, lse


def softmax_xent_backward(logits, targets, lse, dy, version=3, threads=128):
    """dlogits (N, C) = (exp(logits - lse) - onehot) * dy, with kernel `version` 1, 2 or 3."""
    xp = get_array_module(logits)
    N, C = logits.shape
    dlogits = xp.empty_like(logits)
    if version == 1:
        launch(softmax_xent_backward_v1, (N + threads - 1) // threads, threads, logits, targets, lse, dy, dlogits)
    elif version in (2, 3):
        launch(softmax_xent_backward_v2, (N * C + threads - 1) // threads, threads, logits, targets, lse, dy, dlogits)
    else:
        raise ValueError(f"softmax_xent_backward: no version {version} (have 1, 2, 3)")
    return dlogits


# ---------------------------------------------------------------- clip_loss forward
@cuda.jit
def clip_loss_forward_v1(logits, lse_row, lse_col, loss):
    B = logits.shape[0]
    t = cuda.grid(1)
    if t < 2 * B:
        m, l = -math.inf, 0.0
        k = t % B
        for j in range(B):
            # thread t < B walks row t, thread t >= B walks column t - B
            m, l = online_update(m, l, logits[k, j] if t < B else logits[j, k])
        lse = m + math.log(l)
        if t < B:
            lse_row[k] = lse
        else:
            lse_col[k] = lse
        # loss = sum over rows and columns of (lse - S_kk) / (2B); atomics make the order of
        # this sum, and so its last bits, vary from run to run
        cuda.atomic.add(loss, 0, (lse - logits[k, k]) / (2 * B))


@cuda.jit
def clip_loss_forward_v2(logits, lse_row, part_m, part_l, loss):
    B = logits.shape[0]
    tid, T = cuda.threadIdx.x, cuda.blockDim.x
    tile = cuda.blockIdx.x
    r0 = tile * ROWS
    rows = min(ROWS, B - r0)
    sm_m = cuda.shared.array((ROWS, MAX_THREADS), float64)      # row r's pair kept by thread tid
    sm_l = cuda.shared.array((ROWS, MAX_THREADS), float64)
    for r in range(ROWS):
        sm_m[r, tid], sm_l[r, tid] = -math.inf, 0.0
    for j in range(tid, B, T):
        m, l = -math.inf, 0.0                                   # column j over this tile's rows
        for r in range(rows):
            x = logits[r0 + r, j]
            m, l = online_update(m, l, x)
            sm_m[r, tid], sm_l[r, tid] = online_update(sm_m[r, tid], sm_l[r, tid], x)
        part_m[tile, j], part_l[tile, j] = m, l
    cuda.syncthreads()
    s = T // 2
    while s > 0:                                                # tree_merge, for all rows at once
        if tid < s:
            for r in range(rows):
                sm_m[r, tid], sm_l[r, tid] = merge(sm_m[r, tid], sm_l[r, tid],
                                                   sm_m[r, tid + s], sm_l[r, tid + s])
        cuda.syncthreads()
        s //= 2
    if tid < rows:
        i = r0 + tid
        lse_row[i] = sm_m[tid, 0] + math.log(sm_l[tid, 0])
        cuda.atomic.add(loss, 0, (lse_row[i] - logits[i, i]) / (2 * B))


@cuda.jit
def clip_loss_columns_v2(logits, part_m, part_l, lse_col, loss):
    B = logits.shape[0]
    j = cuda.grid(1)
    if j < B:
        m, l = -math.inf, 0.0
        for tile in range(part_m.shape[0]):
            m, l = merge(m, l, part_m[tile, j], part_l[tile, j])
        lse_col[j] = m + math.log(l)
        cuda.atomic.add(loss, 0, (lse_col[j] - logits[j, j]) / (2 * B))


def clip_loss_forward(logits, version=2, threads=128):
    """(loss 0-d in the logits' dtype, lse_row (B,) float64, lse_col (B,) float64)."""
    _check_threads(threads)
    xp = get_array_module(logits)
    B = logits.shape[0]
    lse_row = xp.empty(B, xp.float64)
    lse_col = xp.empty(B, xp.float64)
    loss = xp.zeros(1, xp.float64)                  # zeroed: the kernels add into it
    if version == 1:
        launch(clip_loss_forward_v1, (2 * B + threads - 1) // threads, threads, logits, lse_row, lse_col, loss)
    elif version == 2:
        tiles = (B + ROWS - 1) // ROWS
        part_m = xp.empty((tiles, B), xp.float64)   # each tile's column statistics
        part_l = xp.empty((tiles, B), xp.float64)
        launch(clip_loss_forward_v2, tiles, threads, logits, lse_row, part_m, part_l, loss)
        launch(clip_loss_columns_v2, (B + threads - 1) // threads, threads, logits, part_m, part_l, lse_col, loss)
    else:
        raise ValueError(f"clip_loss_forward: no version {version} (have 1, 2)")
    return loss.astype(logits.dtype).reshape(()), lse_row, lse_col


# ---------------------------------------------------------------- clip_loss backward
@cuda.jit(device=True)
def clip_grad(logits, lse_row, lse_col, dy, i, j):
    """dS_ij = dy / (2B) * (exp(S_ij - lse_row_i) + exp(S_ij - lse_col_j) - 2 [i == j])."""
    B = logits.shape[0]
    g = math.exp(logits[i, j] - lse_row[i]) + math.exp(logits[i, j] - lse_col[j])
    if i == j:
        g -= 2.0
    return dy / (2 * B) * g


@cuda.jit
def clip_loss_backward_v1(logits, lse_row, lse_col, dy, sims, with_dscale, dlogits, dscale):
    B = logits.shape[0]
    k = cuda.grid(1)
    if k < B * B:
        i, j = k // B, k % B
        g = clip_grad(logits, lse_row, lse_col, dy[0], i, j)
        dlogits[i, j] = g
        if with_dscale:
            cuda.atomic.add(dscale, 0, g * sims[i, j])


@cuda.jit
def clip_loss_backward_v2(logits, lse_row, lse_col, dy, sims, with_dscale, dlogits, dscale):
    B = logits.shape[0]
    tid = cuda.threadIdx.x
    sm = cuda.shared.array(MAX_THREADS, float64)
    part, d = 0.0, dy[0]
    for k in range(cuda.grid(1), B * B, cuda.gridsize(1)):     # grid-stride: any grid size works
        i, j = k // B, k % B
        g = clip_grad(logits, lse_row, lse_col, d, i, j)
        dlogits[i, j] = g
        part += g * sims[i, j]
    if with_dscale:                                 # the same for every thread: no divergent barrier
        sm[tid] = part
        cuda.syncthreads()
        s = cuda.blockDim.x // 2
        while s > 0:
            if tid < s:
                sm[tid] += sm[tid + s]
            cuda.syncthreads()
            s //= 2
        if tid == 0:
            cuda.atomic.add(dscale, 0, sm[0])


def clip_loss_backward(logits, lse_row, lse_col, dy, sims=None, version=2, threads=128, blocks=1024):
    """(dlogits (B, B), dscale 0-d or None) with kernel `version` 1 or 2 (v2: at most `blocks` blocks).
    dy, a number or a 0-d array, goes to the kernels as a (1,) array: on a GPU the upstream
    gradient is a device array, and float(dy) would make the host wait for the GPU every step."""
    _check_threads(threads)
    xp = get_array_module(logits)
    B = logits.shape[0]
    dlogits = xp.empty_like(logits)
    dscale = xp.zeros(1, xp.float64)
    with_dscale = sims is not None
    dy = xp.asarray(dy, dtype=xp.float64).reshape(1)
    args = (logits, lse_row, lse_col, dy, sims if with_dscale else logits, with_dscale, dlogits, dscale)
    if version == 1:
        launch(clip_loss_backward_v1, (B * B + threads - 1) // threads, threads, *args)
    elif version == 2:
        launch(clip_loss_backward_v2, min(blocks, (B * B + threads - 1) // threads), threads, *args)
    else:
        raise ValueError(f"clip_loss_backward: no version {version} (have 1, 2)")
    return dlogits, (dscale.astype(logits.dtype).reshape(()) if with_dscale else None)
