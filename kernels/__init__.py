"""miniclip.kernels: fused kernels, each family in its own folder (installed from kernels/).

Every family has
    reference.py    plain NumPy, readable, float64-capable: the definition of correct
    numba_cpu.py    @njit kernels for NumPy arrays
    numba_cuda.py   numba.cuda kernels for CuPy arrays, numbered versions v1 (naive) ... vN
    cupy_raw.py     a CuPy RawKernel in CUDA C, where C teaches more

Which implementation the functional ops call is chosen by the array's device (NumPy -> Numba
CPU, CuPy -> CUDA) unless the references are forced, for learning or debugging:

    miniclip.kernels.use("reference")      # or MINICLIP_KERNELS=reference in the environment
    miniclip.kernels.use("fast")           # the default
"""
import contextlib
import os

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
