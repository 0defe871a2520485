"""Layer norm, GELU and QuickGELU as numba.cuda kernels, every version kept.

The math is in reference.py; the one-pass statistics (sums of x - K, K the row's first value)
and why they are stable are in numba_cpu.py. Versions (the wrappers take `version=`):

layer_norm forward (N rows of C)
    v1  one thread per row: the shifted sums over the row, then a second loop writes y. Naive:
        threads read addresses C apart (uncoalesced), and N = 4160 threads barely fill a GPU.
    v2  one block per row: thread k takes columns k, k + T, ... (coalesced) and keeps its own
        two sums; a shared-memory tree adds the T pairs (sums simply add: nothing to rescale,
        unlike softmax's (m, l)). Every thread then reads the row's mean and rstd and writes
        its columns of y.
layer_norm backward
    v1  one thread per row computes dx (two loops over the row); a second kernel, one thread per
        column, sums dweight and dbias down the rows (neighbouring threads read neighbouring
        columns: already coalesced).
    v2  one block per tile of rows: for each row, the threads' parts of mean(dxhat) and
        mean(dxhat * xhat) are tree-summed in shared memory, then dx is written coalesced. Each
        thread also adds its columns' dy * xhat and dy into the tile's row of a (tiles, C)
        partial buffer (it owns those entries: no atomics, so the result is deterministic);
        the column kernel of v1 then sums tiles instead of rows.
gelu, quick_gelu forward and backward
    one version: one thread per element (grid-stride loop). Elementwise kernels are bound by
    memory from the start, and each element is read and written once, coalesced.

The simulator has no warp shuffles, so the reductions are shared-memory trees. Accumulators
are float64, and loads are cast with float64(...): float32 * float32 stays float32 on a GPU,
and in the simulator, which runs plain Python, even float32 - float stays float32.

Wrappers allocate with xp = get_array_module(x): CuPy arrays on a GPU, NumPy arrays in Numba's
simulator, where tests/kernels/test_layer_norm.py runs every version against reference.py.
"""
import math

from numba import cuda, float64

from miniclip.backend import get_array_module

from ..cuda_launch import launch

MAX_THREADS = 256      # the shared arrays' size: a block has at most this many threads


@cuda.jit(device=True)
def tree_sum(sm, tid, width):
    """Sum sm[0 : width] (width a power of two) into sm[0]; every thread must call it."""
    s = width // 2
    while s > 0:
        if tid < s:
            sm[tid] += sm[tid + s]
        cuda.syncthreads()
        s //= 2


# ---------------------------------------------------------------- layer_norm forward
@cuda.jit
def layer_norm_forward_v1(x, weight, bias, eps, y, mean, rstd):
    i = cuda.grid(1)
    N, C = x.shape
    if i < N:
        K = float64(x[i, 0])                        # the shift (see numba_cpu.py)
        s, ss = 0.0, 0.0
        for j in range(C):
            d = x[i, j] - K
            s += d
            ss += d * d
        mu = K + s / C
        r = 1.0 / math.sqrt(max(ss / C - (s / C) ** 2, 0.0) + eps)
        mean[i], rstd[i] = mu, r
        for j in range(C):
            y[i, j] = (float64(x[i, j]) - mu) * r * weight[j] + bias[j]


@cuda.jit
def layer_norm_forward_v2(x, weight, bias, eps, y, mean, rstd):
    i = cuda.blockIdx.x
    tid, T = cuda.threadIdx.x, cuda.blockDim.x
    C = x.shape[1]
    sm_s = cuda.shared.array(MAX_THREADS, float64)
    sm_ss = cuda.shared.array(MAX_THREADS, float64)
    K = float64(x[i, 0])                            # every thread reads the same address: one broadcast load
    s, ss = 0.0, 0.0
    for j in range(tid, C, T):
        d = x[i, j] - K
        s += d
        ss += d * d
    sm_s[tid], sm_ss[tid] = s, ss
    cuda.syncthreads()
    tree_sum(sm_s, tid, T)
    tree_sum(sm_ss, tid, T)
    mu = K + sm_s[0] / C
    r = 1.0 / math.sqrt(max(sm_ss[0] / C - (sm_s[0] / C) ** 2, 0.0) + eps)
    if tid == 0:
        mean[i], rstd[i] = mu, r
    for j in range(tid, C, T):
        y[i, j] = (float64(x[i, j]) - mu) * r * weight[j] + bias[j]


def _check_threads(threads):
    if threads > MAX_THREADS or threads & (threads - 1):
        raise ValueError(f"threads={threads}: need a power of two <= {MAX_THREADS} "
                         "(the tree reduction halves it)")


def layer_norm_forward(x, weight, bias, eps, version=2, threads=128):
    """(y (N, C) like x, mean (N,) float64, rstd (N,) float64), with kernel `version` 1 or 2."""
    _check_threads(threads)
    xp = get_array_module(x)
    N = x.shape[0]
    y = xp.empty_like(x)
    mean = xp.empty(N, xp.float64)
    rstd = xp.empty(N, xp.float64)
    if version == 1:
        launch(layer_norm_forward_v1, (N + threads - 1) // threads, threads, x, weight, bias, float(eps), y, mean, rstd)
    elif version == 2:
        launch(layer_norm_forward_v2, N, threads, x, weight, bias, float(eps), y, mean, rstd)
    else:
        raise ValueError(f"layer_norm_forward: no version {version} (have 1, 2)")
    return y, mean, rstd


# ---------------------------------------------------------------- layer_norm backward
@cuda.jit
def layer_norm_backward_v1(dy, x, weight, mean, rstd, dx):
    i = cuda.grid(1)
    N, C = x.shape
    if i < N:
        mean_g, mean_gx = 0.0, 0.0                  # mean(dxhat), mean(dxhat * xhat)
        for j in range(C):
            g = float64(dy[i, j]) * weight[j]
            mean_g += g
            mean_gx += g * (x[i, j] - mean[i]) * rstd[i]
        mean_g /= C
        mean_gx /= C
        for j in range(C):
            xhat = (x[i, j] - mean[i]) * rstd[i]
            dx[i, j] = rstd[i] * (float64(dy[i, j]) * weight[j] - mean_g - xhat * mean_gx)


@cuda.jit
def layer_norm_param_grads_v1(dy, x, mean, rstd, dweight, dbias):
    j = cuda.grid(1)
    N, C = x.shape
    if j < C:
        dw, db = 0.0, 0.0
        for i in range(N):
            dw += dy[i, j] * (x[i, j] - mean[i]) * rstd[i]
            db += float64(dy[i, j])
        dweight[j], dbias[j] = dw, db


@cuda.jit
def layer_norm_backward_v2(dy, x, weight, mean, rstd, rows_per_block, dx, part_dw, part_db):
    N, C = x.shape
    tid, T = cuda.threadIdx.x, cuda.blockDim.x
    tile = cuda.blockIdx.x
    sm_g = cuda.shared.array(MAX_THREADS, float64)
    sm_gx = cuda.shared.array(MAX_THREADS, float64)
    for j in range(tid, C, T):
        part_dw[tile, j], part_db[tile, j] = 0.0, 0.0
    for i in range(tile * rows_per_block, min(N, (tile + 1) * rows_per_block)):
        g_sum, gx_sum = 0.0, 0.0
        for j in range(tid, C, T):
            xhat = (x[i, j] - mean[i]) * rstd[i]
            g = float64(dy[i, j]) * weight[j]
            g_sum += g
            gx_sum += g * xhat
            part_dw[tile, j] += dy[i, j] * xhat
            part_db[tile, j] += dy[i, j]
        sm_g[tid], sm_gx[tid] = g_sum, gx_sum
        cuda.syncthreads()
        tree_sum(sm_g, tid, T)
        tree_sum(sm_gx, tid, T)
        mean_g, mean_gx = sm_g[0] / C, sm_gx[0] / C
        for j in range(tid, C, T):
            xhat = (x[i, j] - mean[i]) * rstd[i]
            dx[i, j] = rstd[i] * (float64(dy[i, j]) * weight[j] - mean_g - xhat * mean_gx)
        cuda.syncthreads()                          # everyone has read sm before the next row reuses it


@cuda.jit
def sum_tiles_v2(part_dw, part_db, dweight, dbias):
    j = cuda.grid(1)
    if j < part_dw.shape[1]:
        dw, db = 0.0, 0.0
        for tile in range(part_dw.shape[0]):
            dw += part_dw[tile, j]
            db += part_db[tile, j]
        dweight[j], dbias[j] = dw, db


def layer_norm_backward(dy, x, weight, mean, rstd, version=2, threads=128, rows_per_block=16):
    """(dx (N, C), dweight (C,), dbias (C,)) with kernel `version` 1 or 2."""
    _check_threads(threads)
    xp = get_array_module(x)
    N, C = x.shape
    dx = xp.empty_like(x)
    dweight = xp.empty_like(weight)
    dbias = xp.empty_like(weight)
    columns = (C + threads - 1) // threads
    if version == 1:
        launch(layer_norm_backward_v1, (N + threads - 1) // threads, threads, dy, x, weight, mean, rstd, dx)
        launch(layer_norm_param_grads_v1, columns, threads, dy, x, mean, rstd, dweight, dbias)
    elif version == 2:
        tiles = (N + rows_per_block - 1) // rows_per_block
        part_dw = xp.empty((tiles, C), xp.float64)
        part_db = xp.empty((tiles, C), xp.float64)
        launch(layer_norm_backward_v2, tiles, threads, dy, x, weight, mean, rstd, rows_per_block, dx, part_dw, part_db)
        launch(sum_tiles_v2, columns, threads, part_dw, part_db, dweight, dbias)
    else:
        raise ValueError(f"layer_norm_backward: no version {version} (have 1, 2)")
    return dx, dweight, dbias


# ---------------------------------------------------------------- GELU and QuickGELU
@cuda.jit(device=True)
def sigmoid(z):
    """1 / (1 + exp(-z)) without overflow: exp only ever sees -|z|."""
    e = math.exp(-abs(z))
    return 1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)


# The activations' kernels take a bias b over the last dimension (the flat index k is in column
# k % C); without one, b is a single 0.
@cuda.jit
def gelu_forward_kernel(x, b, y):
    for k in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = float64(x[k] + b[k % b.size])
        y[k] = v * 0.5 * (1.0 + math.erf(v / math.sqrt(2.0)))


@cuda.jit
def gelu_backward_kernel(dy, x, b, dx):
    for k in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = float64(x[k] + b[k % b.size])
        Phi = 0.5 * (1.0 + math.erf(v / math.sqrt(2.0)))
        phi = math.exp(-0.5 * v * v) / math.sqrt(2.0 * math.pi)
        dx[k] = dy[k] * (Phi + v * phi)


@cuda.jit
def quick_gelu_forward_kernel(x, b, y):
    for k in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = float64(x[k] + b[k % b.size])
        y[k] = v * sigmoid(1.702 * v)


@cuda.jit
def quick_gelu_backward_kernel(dy, x, b, dx):
    for k in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = float64(x[k] + b[k % b.size])
        s = sigmoid(1.702 * v)
        dx[k] = dy[k] * (s + 1.702 * v * s * (1.0 - s))


def _elementwise(kernel, out_like, arrays, bias, threads=256, blocks=4096):
    """Launch an activation kernel on flat views with the bias (or a single 0); at most `blocks`
    blocks (grid-stride)."""
    xp = get_array_module(out_like)
    out = xp.empty_like(out_like)
    bias = xp.zeros(1, out.dtype) if bias is None else bias
    grid = max(1, min(blocks, (out.size + threads - 1) // threads))
    launch(kernel, grid, threads, *(a.reshape(-1) for a in arrays), bias, out.reshape(-1))
    return out


def gelu_forward(x, bias=None, **launch):
    return _elementwise(gelu_forward_kernel, x, (x,), bias, **launch)


def gelu_backward(dy, x, bias=None, **launch):
    return _elementwise(gelu_backward_kernel, x, (dy, x), bias, **launch)


def quick_gelu_forward(x, bias=None, **launch):
    return _elementwise(quick_gelu_forward_kernel, x, (x,), bias, **launch)


def quick_gelu_backward(dy, x, bias=None, **launch):
    return _elementwise(quick_gelu_backward_kernel, x, (dy, x), bias, **launch)
