"""Softmax cross-entropy as a CuPy RawKernel: the CUDA C behind numba_cuda.py's v2, with warp shuffles.

In CUDA C the reduction can do what Numba's simulator cannot: merge the (m, l) pairs inside a
warp with __shfl_down_sync, register to register, with no shared memory and no barrier. Only
one pair per warp then goes through shared memory, and warp 0 merges those. The math is
numba_cpu.py's: lse = m + log(l) in one pass, then dlogits = (exp(x - lse) - onehot) * dy.

SOURCE is compiled by CuPy (with NVRTC) on first use, once per dtype: `typedef float scalar_t;`
(or double) is put in front of it. tests/kernels/test_cuda_compile.py compiles both with NVRTC,
as CuPy does, and checks their registers and shared memory with ptxas, without a GPU;
tests/kernels/test_softmax_xent.py runs them against reference.py on a real GPU (marked `gpu`).
"""
from miniclip.backend import get_array_module

SOURCE = r"""
// scalar_t (float or double) is set by a typedef put in front of this source.
// Accumulators are double: at |x| ~ 1e4 a float lse would be off by ~5e-4.

// -infinity as a double, from its bit pattern: NVRTC, the compiler cupy.RawModule uses, has no
// <math.h> and so no INFINITY macro (nvcc has both, which is how the missing macro went unseen).
#define NEG_INF __longlong_as_double(0xfff0000000000000ULL)

__device__ void online_update(double& m, double& l, double x)
{
    if (x > m) { l = l * exp(m - x) + 1.0; m = x; }     // rescale the old sum to the new max
    else       { l += exp(x - m); }
}

__device__ void merge(double& m, double& l, double m2, double l2)
{
    double m_new = fmax(m, m2);
    if (m_new == NEG_INF) return;                      // both parts empty
    l = l * exp(m - m_new) + l2 * exp(m2 - m_new);
    m = m_new;
}

// Merge the pairs of the 32 lanes of a warp into lane 0: 5 steps of shuffles, no barrier.
__device__ void warp_merge(double& m, double& l)
{
    for (int offset = 16; offset > 0; offset >>= 1) {
        double m2 = __shfl_down_sync(0xffffffff, m, offset);
        double l2 = __shfl_down_sync(0xffffffff, l, offset);
        merge(m, l, m2, l2);
    }
}

// One block per row; blockDim.x is a multiple of 32, at most 1024.
extern "C" __global__ void softmax_xent_forward(
    const scalar_t* logits, const long long* targets, scalar_t* loss, double* lse, int C)
{
    __shared__ double sm_m[32], sm_l[32];                // one pair per warp
    const int i = blockIdx.x;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const scalar_t* x = logits + (long long)i * C;      // this block's row

    double m = NEG_INF, l = 0.0;
    for (int j = threadIdx.x; j < C; j += blockDim.x)   // coalesced: lane k reads column k, k + T, ...
        online_update(m, l, (double)x[j]);
    warp_merge(m, l);
    if (lane == 0) { sm_m[warp] = m; sm_l[warp] = l; }
    __syncthreads();
    if (warp == 0) {
        const int n_warps = blockDim.x / 32;
        m = lane < n_warps ? sm_m[lane] : NEG_INF;
        l = lane < n_warps ? sm_l[lane] : 0.0;
        warp_merge(m, l);
        if (lane == 0) {
            lse[i] = m + log(l);
            loss[i] = (scalar_t)(lse[i] - (double)x[targets[i]]);
        }
    }
}

// One thread per logit (grid-stride): softmax is recomputed from the saved lse, no reduction.
extern "C" __global__ void softmax_xent_backward(
    const scalar_t* logits, const long long* targets, const double* lse, const scalar_t* dy,
    scalar_t* dlogits, long long N, int C)
{
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < N * C;
         k += (long long)gridDim.x * blockDim.x) {
        const long long i = k / C;
        const double onehot = (k % C == targets[i]) ? 1.0 : 0.0;
        dlogits[k] = (scalar_t)((exp((double)logits[k] - lse[i]) - onehot) * (double)dy[i]);
    }
}
"""

CTYPES = {"float32": "float", "float64": "double"}
_modules = {}


def source_for(dtype_name):
    """The compilable source for 'float32' or 'float64' logits."""
    return f"typedef {CTYPES[dtype_name]} scalar_t;\n" + SOURCE


def _function(name, dtype):
    import cupy
    if dtype.name not in _modules:
        _modules[dtype.name] = cupy.RawModule(code=source_for(dtype.name))
    return _modules[dtype.name].get_function(name)


def softmax_xent_forward(logits, targets, threads=256):
    """(loss (N,) in the logits' dtype, lse (N,) float64) on CuPy arrays; int64 targets."""
    xp = get_array_module(logits)
    N, C = logits.shape
    loss = xp.empty(N, logits.dtype)
    lse = xp.empty(N, xp.float64)
    _function("softmax_xent_forward", logits.dtype)((N,), (threads,), (logits, targets, loss, lse, xp.int32(C)))
    return loss, lse


def softmax_xent_backward(logits, targets, lse, dy, threads=256):
    """dlogits (N, C) = (exp(logits - lse) - onehot) * dy on CuPy arrays."""
    xp = get_array_module(logits)
    N, C = logits.shape
    dlogits = xp.empty_like(logits)
    blocks = min(65535, (N * C + threads - 1) // threads)
    _function("softmax_xent_backward", logits.dtype)(
        (blocks,), (threads,), (logits, targets, lse, dy, dlogits, xp.int64(N), xp.int32(C)))
    return dlogits
