"""Shared test set-up.

- NUMBA_ENABLE_CUDASIM=1 is set before numba is imported, so CUDA kernels run in Numba's CUDA
  simulator on machines without a GPU (unless MINICLIP_REAL_GPU=1, as tests/gpu_check.sh sets).
- The simulator hands out a block's `cuda.shared.array` with an unlocked check-then-set, so on a
  loaded machine two threads of one block can get different arrays and a thread's writes are lost
  (seen as a wrong dscale sum in CI). `_lock_simulator_shared_arrays` makes that step atomic.
- `cuda_xp` is the array module CUDA-kernel tests allocate with: NumPy in the simulator, CuPy
  on a real GPU, so one test body covers both.
- The `torch` and `open_clip` fixtures give the test oracles. Where they are not installed those
  tests skip, except when MINICLIP_REQUIRE_ORACLE=1 (set by .ci/run): then a missing oracle is an
  error, so CI can never pass with the oracle tests silently skipped.
"""
import os

if os.environ.get("MINICLIP_REAL_GPU") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import sys  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402

import pytest  # noqa: E402


def _lock_simulator_shared_arrays():
    """Numba's FakeCUDAShared.array, with its allocation look-up under a lock (same body otherwise:
    an allocation is identified by the calling kernel line, two frames up)."""
    import numpy as np
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support
    from numba.core import types
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if alignment is not None:
            raise RuntimeError("Array alignment is not supported in cudasim")
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        if shape == 0:
            count = self._dynshared_size // dtype.itemsize
            return np.frombuffer(self._dynshared.data, dtype=dtype, count=count)
        caller = traceback.extract_stack(sys._getframe())[-2][0:2]
        with lock:
            if caller not in self._allocations:
                self._allocations[caller] = np.empty(shape, dtype)
            return self._allocations[caller]

    kernelapi.FakeCUDAShared.array = array


if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    _lock_simulator_shared_arrays()


def _oracle(name):
    try:
        return __import__(name)
    except ImportError:
        if os.environ.get("MINICLIP_REQUIRE_ORACLE") == "1":
            raise
        pytest.skip(f"{name} is not installed (pip install -e '.[oracle]')")


@pytest.fixture(scope="session")
def torch():
    torch = _oracle("torch")
    torch.set_num_threads(2)
    return torch


@pytest.fixture(scope="session")
def open_clip():
    return _oracle("open_clip")


@pytest.fixture(scope="session")
def cuda_xp():
    """The array module to feed CUDA kernels: NumPy under the simulator, CuPy on a real GPU."""
    if os.environ.get("MINICLIP_REAL_GPU") == "1":
        import cupy
        return cupy
    import numpy
    return numpy


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need a real CUDA GPU; elsewhere they are reported as skipped."""
    if os.environ.get("MINICLIP_REAL_GPU") == "1":
        return
    skip = pytest.mark.skip(reason="needs a real GPU: run tests/gpu_check.sh on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
