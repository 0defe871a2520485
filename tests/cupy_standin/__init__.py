"""A strict CuPy stand-in, so that CI runs miniclip's device path (`--device cuda`) without a GPU.

    from tests import cupy_standin
    cupy_standin.install()        # `import cupy` now gives the stand-in; backend.has_gpu() is True
    ...                           # cupy_standin.transfers: device-to-host transfers per file:line
    cupy_standin.uninstall()

    python -m tests.cupy_standin.run -m miniclip.train --device cuda ...   # the same, in a process

It keeps CuPy's rules where a mistake would only show on a real GPU (tests/cupy_standin/core.py):
arrays are their own type (`cupy.ndarray`) on NumPy memory; np.asarray / np.array / implicit
conversion of one raise TypeError; a NumPy (host) array mixed into a device operation raises
TypeError; and every device-to-host transfer (.get(), .item(), .tolist(), cupy.asnumpy, and
float()/int()/bool() of a one-element array) is counted at the line that asked for it. Installed
as `cupy`, `cupy.cuda` (one device, a stream, pinned memory), `cupy.linalg`, `cupyx`
(scatter_add) and `cupyx.scipy.special` (erf): the parts miniclip uses. Under Numba's CUDA
simulator (NUMBA_ENABLE_CUDASIM=1) it also hands its memory to the simulated kernels
(simulator.py), as a GPU kernel reads a CuPy array's memory through __cuda_array_interface__.

What it cannot show: streams and asynchrony (everything runs at once, in order), kernel launch
cost and speed, dtype support (it has every NumPy dtype; real CuPy has no bfloat16, and some
functions lack some dtypes), device memory (size, pools, out-of-memory), multiple devices and
NCCL (not provided), the correctness of CUDA kernels or CuPy's own functions (it runs NumPy's),
and functions CuPy lacks (it forwards any NumPy function name).
"""
import contextlib
import math
import os
import sys
import types

import numpy as np

from tests.cupy_standin import core
from tests.cupy_standin.core import pinned_allocations, transfers

__all__ = ["install", "uninstall", "installed", "transfers", "pinned_allocations", "reset_counts", "total_transfers"]


def reset_counts():
    transfers.clear()
    pinned_allocations.clear()


def total_transfers():
    return sum(transfers.values())


# -- cupy.cuda: one device, the default stream, pinned host memory -------------------------------
class _Runtime:
    """cupy.cuda.runtime: the device count, and versions and properties that say they are fake
    (0 for a version, a name that names the stand-in), so a script printing them runs here too."""

    @staticmethod
    def getDeviceCount():
        return 1

    @staticmethod
    def runtimeGetVersion():
        return 0

    @staticmethod
    def driverGetVersion():
        return 0

    @staticmethod
    def getDeviceProperties(index):
        Device(index)
        return {"name": b"CuPy stand-in (no GPU)", "totalGlobalMem": 0, "major": 0, "minor": 0}


class Device:
    def __init__(self, index=0):
        if index != 0:
            raise ValueError(f"the stand-in has one device (0), not {index}")
        self.id = index

    def use(self):
        pass

    def synchronize(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class Stream:
    ptr = 0          # the default stream's handle

    def synchronize(self):
        pass


def alloc_pinned_memory(nbytes):
    """Host memory for fast copies to the device (here plain host memory; the call is counted)."""
    pinned_allocations[core._caller()] += 1
    return bytearray(nbytes)


def _module(name, attributes, getattr_from=None):
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    if getattr_from is not None:
        module.__getattr__ = lambda attribute: core.module_getattr(attribute, getattr_from)
    return module


def _erf(x):
    return core.ndarray(np.vectorize(math.erf, otypes=[x.dtype])(x._a))


def _scatter_add(target, index, values):
    np.add.at(target._a, core._index(index), core._unwrap(values, "scatter_add"))


_NAMES = ("cupy", "cupy.cuda", "cupy.linalg", "cupyx", "cupyx.scipy", "cupyx.scipy.special")


def _modules():
    cuda = _module("cupy.cuda", {"runtime": _Runtime, "Device": Device, "Stream": Stream,
                                 "get_current_stream": lambda: Stream(),
                                 "alloc_pinned_memory": alloc_pinned_memory})
    linalg = _module("cupy.linalg", {}, getattr_from=np.linalg)
    cupy = _module("cupy", {"ndarray": core.ndarray, "asarray": core.asarray, "array": core.array,
                            "asnumpy": core.asnumpy, "get_array_module": core.get_array_module,
                            "cuda": cuda, "linalg": linalg, "__stand_in__": True,
                            "__version__": "stand-in"}, getattr_from=np)
    special = _module("cupyx.scipy.special", {"erf": _erf})
    scipy = _module("cupyx.scipy", {"special": special})
    cupyx = _module("cupyx", {"scatter_add": _scatter_add, "scipy": scipy})
    return dict(zip(_NAMES, (cupy, cuda, linalg, cupyx, scipy, special)))


def _forget_backend_choice():
    """miniclip.backend remembers whether cupy imported; make it ask again."""
    backend = sys.modules.get("miniclip.backend")
    if backend is not None:
        backend._cupy = None


def install():
    """Make `import cupy` (and the cupyx parts) give the stand-in in this process."""
    if "cupy" in sys.modules and not getattr(sys.modules["cupy"], "__stand_in__", False):
        raise RuntimeError("the real cupy is imported in this process: the stand-in would not replace it")
    sys.modules.update(_modules())
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        from tests.cupy_standin import simulator
        simulator.install()
    _forget_backend_choice()


def uninstall():
    for name in _NAMES:
        sys.modules.pop(name, None)
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        from tests.cupy_standin import simulator
        simulator.uninstall()
    _forget_backend_choice()


@contextlib.contextmanager
def installed():
    """The stand-in as `cupy` inside the block, with its counts reset; the module is yielded."""
    install()
    reset_counts()
    try:
        yield sys.modules[__name__]
    finally:
        uninstall()
