"""Launching a numba.cuda kernel, in one place: on CuPy's stream, with no wait per argument, on a legal grid.

Every numba_cuda.py launches its kernels as `launch(kernel, grid, block, *args)` instead of
`kernel[grid, block](*args)`, for what a real GPU needs:

- The stream. CuPy queues its own work (allocations, cuBLAS GEMMs, elementwise ops) on its
  current stream; the kernels read what that work writes and the other way round, so they must
  be queued on the same stream, in program order. `cuda.external_stream(pointer)` is Numba's
  handle on a stream it did not create: CuPy's current one, asked for through
  miniclip.backend.current_stream_pointer() (only backend.py imports cupy).
- No wait per argument. Numba reads a CuPy array through the CUDA array interface, and by default
  (NUMBA_CUDA_ARRAY_INTERFACE_SYNC=1) it then synchronises the stream that array names: the host
  would wait for the GPU to drain its queue once per argument, 5 to 10 times per kernel, and the
  GPU would idle while Python prepares the next launch. The kernel runs on that same stream, after
  the work that wrote its inputs, so the wait protects nothing: `cuda.as_cuda_array(x, sync=False)`.
- Legal grids. gridDim.x may be up to 2^31 - 1 blocks, gridDim.y and gridDim.z only up to 65,535,
  and a block has at most 1,024 threads. Past a limit the GPU refuses the launch, but Numba's
  simulator runs it anyway, so `check_launch` tests every launch against the limits, in the
  simulator too, and names the kernel. (Attention puts B * H on the x axis for this reason.)

In the simulator (NUMBA_ENABLE_CUDASIM=1) there is no stream and no device array: the kernel is
called with the arrays as they are. `recording()` collects the launches instead of running them:
kernels/compile_check.py uses it to learn which kernels, with which argument types, the wrappers
launch, and compiles exactly those to PTX.
"""
import contextlib

from numba import cuda
from numba.cuda import config as cuda_config

from miniclip.backend import current_stream_pointer, is_cupy_array

MAX_GRID = (2 ** 31 - 1, 65_535, 65_535)      # gridDim.x, .y, .z (every GPU since compute capability 3.0)
MAX_THREADS_PER_BLOCK = 1024
_recorded = None                               # a list while recording(), else None


def _dims(shape):
    """(x, y, z) of a grid or block given as an int or a tuple of 1 to 3 ints."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return tuple(int(n) for n in shape) + (1,) * (3 - len(shape))


def check_launch(name, grid, block):
    """Raise ValueError naming the kernel when `grid` or `block` is beyond what CUDA can launch."""
    grid, block = _dims(grid), _dims(block)
    for axis, n, limit in zip("xyz", grid, MAX_GRID):
        if not 1 <= n <= limit:
            raise ValueError(f"{name}: gridDim.{axis} = {n} is outside [1, {limit:,}] (grid {grid}); "
                             "put the large dimension on x, or loop over it in the kernel")
    threads = block[0] * block[1] * block[2]
    if min(block) < 1 or threads > MAX_THREADS_PER_BLOCK:
        raise ValueError(f"{name}: block {block} has {threads} threads; a block has 1 to "
                         f"{MAX_THREADS_PER_BLOCK} threads")


def launch(kernel, grid, block, *args):
    """kernel[grid, block](*args), on CuPy's current stream, without a synchronisation per argument."""
    check_launch(kernel.__name__, grid, block)
    if _recorded is not None:
        _recorded.append((kernel, grid, block, args))
    elif cuda_config.ENABLE_CUDASIM:
        kernel[grid, block](*args)
    else:
        stream = cuda.external_stream(current_stream_pointer())
        kernel[grid, block, stream](*(cuda.as_cuda_array(a, sync=False) if is_cupy_array(a) else a
                                      for a in args))


@contextlib.contextmanager
def recording():
    """Within the block, launches are checked and collected, not run: yields the list of
    (kernel, grid, block, args)."""
    global _recorded
    previous, _recorded = _recorded, []
    try:
        yield _recorded
    finally:
        _recorded = previous
