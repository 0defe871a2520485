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

# Numba's parallel=True kernels run on GNU OpenMP, whose threads by default keep spinning for a
# while after each parallel region, waiting for the next one. On a 2-core machine the spinning
# threads take the cores from whatever runs next: the BLAS threads of a matmul, torch's own
# OpenMP threads in a benchmark, the other pytest-xdist worker. Measured here: the autograd test
# suite (`pytest -n 2`) took 45 s instead of 20 s, and a 1024 x 1024 softmax_xent forward 8 ms
# instead of 5. PASSIVE makes idle threads sleep at once (a wake-up costs some microseconds).
# It must be set before numba first loads libgomp (at the first parallel call); a value already
# in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
