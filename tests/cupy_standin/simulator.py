"""Stand-in arrays as arguments of kernels in Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1).

On a GPU a Numba kernel reads a CuPy array's device memory through __cuda_array_interface__. The
simulator only knows NumPy arrays (anything else is passed to the kernel as it is), so at each
simulated launch every stand-in argument is replaced by its memory, a NumPy array, which the
simulated threads then read and write in place. Nothing is transferred or counted: on a GPU the
kernel would touch device memory only.

`launches` counts the kernels launched, per "module:kernel", so a test can tell that the numba.cuda
kernels ran and not a fallback. The simulator calls device functions (@cuda.jit(device=True)) and
kernels through the same method; only a launch from the host is counted and has stand-in arguments.
"""
import collections

from tests.cupy_standin import core

launches = collections.Counter()      # "miniclip.kernels.<family>.numba_cuda:<kernel>" -> launches
_original_call = None


def install():
    global _original_call
    from numba.cuda.simulator import kernel
    if _original_call is not None:
        return
    _original_call = kernel.FakeCUDAKernel.__call__

    def call(self, *args):
        if self._device or kernel._get_kernel_context() is not None:   # inside a simulated kernel
            return _original_call(self, *args)
        launches[f"{self.fn.__module__}:{self.fn.__name__}"] += 1
        return _original_call(self, *(a._a if isinstance(a, core.ndarray) else a for a in args))
    kernel.FakeCUDAKernel.__call__ = call


def uninstall():
    global _original_call
    if _original_call is None:
        return
    from numba.cuda.simulator.kernel import FakeCUDAKernel
    FakeCUDAKernel.__call__, _original_call = _original_call, None
