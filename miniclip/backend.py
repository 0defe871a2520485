"""The NumPy / CuPy switch: the only module in miniclip that imports cupy.

Every op is written once against an "array module" `xp`, which is `numpy` for arrays in host
memory and `cupy` for arrays on a CUDA GPU. `get_array_module(x)` picks it from the array
itself, so the same line of code runs on either device:

    xp = get_array_module(x)
    y = xp.exp(x - x.max(axis=-1, keepdims=True))

CuPy is imported lazily, on the first question that needs it, so `import miniclip` stays fast
and works on machines without CUDA.
"""
import numpy as np

_cupy = None          # the cupy module once imported, False when it is not usable here


def _import_cupy():
    """Return the cupy module, or None when CuPy is not installed or cannot see a GPU."""
    global _cupy
    if _cupy is None:
        try:
            import cupy
            cupy.cuda.runtime.getDeviceCount()   # raises when there is no driver or device
            _cupy = cupy
        except Exception:
            _cupy = False
    return _cupy or None


def has_gpu():
    """True when CuPy is installed and a CUDA device is visible."""
    return _import_cupy() is not None


def is_cupy_array(x):
    """True for a cupy.ndarray, without importing cupy when it was never imported."""
    return type(x).__module__.startswith("cupy")


def device_of(x):
    """'cuda' for a CuPy array, 'cpu' for anything else (NumPy arrays and Python numbers)."""
    return "cuda" if is_cupy_array(x) else "cpu"


def get_array_module(x):
    """numpy or cupy, whichever owns the array `x`."""
    if is_cupy_array(x):
        return _import_cupy()
    return np


def to_numpy(x):
    """A NumPy copy of a CuPy array (the array itself when it is already on the host)."""
    if is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def to_device(x, device):
    """Move an array to 'cpu' or 'cuda' (a no-op when it is already there)."""
    if device == "cpu":
        return to_numpy(x)
    if device == "cuda":
        cupy = _import_cupy()
        if cupy is None:
            raise RuntimeError("to_device('cuda'): CuPy is not installed or no CUDA GPU is visible "
                               "(pip install 'miniclip[gpu]' on a machine with a GPU)")
        return cupy.asarray(x)
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")


def batch_to_device(array, device):
    """A host batch on `device`; to a GPU through pinned (page-locked) host memory.

    The GPU's copy engine reads pinned memory directly; from ordinary (pageable) memory the driver
    first copies the batch into a pinned buffer of its own, a second pass over the bytes. CuPy
    keeps a pool of pinned buffers, so asking for one per batch reuses the same few.
    """
    if device != "cuda" or is_cupy_array(array):
        return to_device(array, device)
    cupy = _require_cupy("batch_to_device")
    array = np.ascontiguousarray(array)
    memory = cupy.cuda.alloc_pinned_memory(array.nbytes)
    pinned = np.frombuffer(memory, array.dtype, array.size).reshape(array.shape)
    pinned[...] = array
    return cupy.asarray(pinned)


def scatter_add(target, index, values):
    """target[index] += values in place, adding once per occurrence of an index (a plain
    target[index] += values adds only once for a repeated index): np.add.at, cupyx.scatter_add."""
    if is_cupy_array(target):
        import cupyx
        cupyx.scatter_add(target, index, values)
    else:
        np.add.at(target, index, values)


def reuse_freed_host_memory():
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the kernel.

    A training step allocates and frees the same large activation arrays every step. By default
    glibc serves each allocation above a threshold (128 KiB, rising to at most 32 MiB) with a fresh
    mmap and unmaps it on free, so in every step the kernel zero-fills every page of every array
    again on first touch (a page fault per page). Measured here, 20 x np.exp(x - 1) on float32:
    (4160, 1024) 89 -> 59 ms, (16640, 1024) 1225 -> 385 ms with this setting (0 page faults).
    The cost: memory freed by the process stays in it, for its next arrays (the peak is unchanged).
    `python -m miniclip.train` and `python -m miniclip.bench step` call this; it affects the whole
    process, so a library import does not. Returns False where it cannot apply (no glibc).
    """
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3     # glibc's mallopt parameter numbers
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 2 ** 30)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))


def _require_cupy(what):
    cupy = _import_cupy()
    if cupy is None:
        raise RuntimeError(f"{what} needs CuPy and a CUDA GPU (pip install 'miniclip[gpu]' on a machine with one)")
    return cupy


def synchronize():
    """Wait until the GPU has finished the work queued so far (for timing); a no-op without CuPy."""
    if _cupy:
        _cupy.cuda.Device().synchronize()


# ---- for data-parallel training on GPUs (miniclip/distributed.py) ------------------------------
def use_gpu(index):
    """Make GPU number `index` (modulo the number of GPUs) this process's current device."""
    cupy = _require_cupy("use_gpu")
    cupy.cuda.Device(index % cupy.cuda.runtime.getDeviceCount()).use()


def nccl():
    """CuPy's NCCL bindings (cupy.cuda.nccl): the collectives between GPUs."""
    _require_cupy("NCCL")
    from cupy.cuda import nccl
    return nccl


def current_stream_pointer():
    """The current CuPy stream, as the integer NCCL's calls take."""
    return _require_cupy("current_stream_pointer").cuda.get_current_stream().ptr


def erf(x):
    """The error function, elementwise, to full float64 precision.

    NumPy has no erf, so the CPU version is `math.erf` compiled by Numba into a ufunc (compiled
    on the first call, cached on disk); on the GPU it is CuPy's own.
    """
    if is_cupy_array(x):
        from cupyx.scipy.special import erf as cupy_erf
        return cupy_erf(x)
    from miniclip.special import erf as numba_erf
    return numba_erf(x)
