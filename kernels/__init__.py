"""miniclip.kernels: fused kernels, each family in its own folder (installed from kernels/).

Every family has
    reference.py    plain NumPy, readable, float64-capable: the definition of correct
    numba_cpu.py    @njit kernels for NumPy arrays
    numba_cuda.py   numba.cuda kernels for CuPy arrays, numbered versions v1 (naive) ... vN
    cupy_raw.py     a CuPy RawKernel in CUDA C, where C teaches more

Which implementation the functional ops call is chosen by the array's device (NumPy -> Numba
CPU, CuPy -> the newest Numba CUDA version) unless the references are forced, for learning or
debugging:

    miniclip.kernels.use("reference")      # or MINICLIP_KERNELS=reference in the environment
    miniclip.kernels.use("fast")           # the default

`pick(family, array)` is that choice, in one place; each family's __init__.py calls it.
"""
import contextlib
import importlib
import os

from miniclip.backend import is_cupy_array

# (The thread settings the kernels rely on, OMP_WAIT_POLICY among them: miniclip/environment.py.)
MODES = ("fast", "reference")
_mode = os.environ.get("MINICLIP_KERNELS", "fast")
if _mode not in MODES:
    raise ValueError(f"MINICLIP_KERNELS={_mode!r}: expected one of {MODES}")


def use(mode):
    """Choose 'fast' kernels or the NumPy 'reference' ones; also a context manager:

        with miniclip.kernels.use("reference"):
            loss.backward()
    """
    global _mode
    if mode not in MODES:
        raise ValueError(f"kernels.use({mode!r}): expected one of {MODES}")
    previous, _mode = _mode, mode

    @contextlib.contextmanager
    def restore_on_exit():
        global _mode
        try:
            yield
        finally:
            _mode = previous
    return restore_on_exit()


def mode():
    """'fast' or 'reference': what the functional ops dispatch to now."""
    return _mode


def pick(family, array):
    """The module that runs kernel `family` (e.g. "layer_norm") on `array`:

        mode() == "reference"   ->  kernels/<family>/reference.py    (NumPy or CuPy array operations)
        a NumPy array           ->  kernels/<family>/numba_cpu.py
        a CuPy array            ->  kernels/<family>/numba_cuda.py   (its newest version)

    Modules are imported on first use: numba takes a while to import, numba.cuda longer.
    """
    if _mode == "reference":
        implementation = "reference"
    elif is_cupy_array(array):
        implementation = "numba_cuda"
    else:
        implementation = "numba_cpu"
    return importlib.import_module(f"{__name__}.{family}.{implementation}")
