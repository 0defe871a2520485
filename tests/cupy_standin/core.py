"""The stand-in's array type and its functions: NumPy memory behind CuPy's rules.

- `ndarray` wraps a NumPy array (`_a`) and is its own type, named `cupy.ndarray`, so
  miniclip.backend.is_cupy_array sees it. Arithmetic, methods and indexing run NumPy on `_a` and
  wrap every array result (reductions give 0-d arrays, as CuPy's do, not Python scalars).
- A host (NumPy) array among the inputs of an operation is a TypeError, as in CuPy; Python and
  NumPy scalars are allowed. Only `asarray`/`array` (and `ndarray.set`) copy host data in.
- Converting to the host implicitly (np.asarray, np.array, __array__) is a TypeError. The
  explicit ways (.get(), .item(), .tolist(), asnumpy, and float()/int()/bool() of a one-element
  array, which CuPy allows) each count one device-to-host transfer at the caller's file:line.
- NumPy functions and ufuncs called on stand-in arrays dispatch here (__array_function__,
  __array_ufunc__), as they do to CuPy, and refuse host arrays mixed in.
"""
import collections
import os
import sys

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
_OWN_FILES = {os.path.join(_HERE, name) for name in ("core.py", "__init__.py", "simulator.py", "run.py")}
transfers = collections.Counter()     # "file:line" -> device-to-host transfers made there
pinned_allocations = collections.Counter()


def _caller():
    """file:line of the first frame outside the stand-in, NumPy's dispatch and miniclip/backend.py
    (whose to_numpy is an explicit transfer: the line that called it asked for it)."""
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename in _OWN_FILES
                                 or "/numpy/" in frame.f_code.co_filename
                                 or frame.f_code.co_filename.endswith(os.path.join("miniclip", "backend.py"))):
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{os.path.relpath(frame.f_code.co_filename)}:{frame.f_lineno}"


def _count_transfer():
    transfers[_caller()] += 1


def _unwrap(value, what):
    """The NumPy value to compute with; a host array is refused, as CuPy refuses it."""
    if isinstance(value, ndarray):
        return value._a
    if isinstance(value, np.ndarray):
        raise TypeError(f"Unsupported type {type(value)} in {what}: a NumPy (host) array mixed with "
                        f"cupy arrays (CuPy refuses it; move it with cupy.asarray first)")
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v, what) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v, what) for k, v in value.items()}
    return value


def _wrap(value):
    """Every array (and NumPy scalar, which CuPy returns as a 0-d array) in a result, wrapped."""
    if isinstance(value, np.ndarray):
        return ndarray(value)
    if isinstance(value, np.generic):
        return ndarray(np.asarray(value))
    if isinstance(value, (list, tuple)) and any(isinstance(v, (np.ndarray, np.generic)) for v in value):
        return type(value)(_wrap(v) for v in value)
    return value


def device_function(function, name=None):
    """`function` (a NumPy function or bound method) on stand-in arrays: unwrap, call, wrap."""
    name = name or getattr(function, "__name__", repr(function))

    def call(*args, **kwargs):
        return _wrap(function(*_unwrap(args, name), **_unwrap(kwargs, name)))
    call.__name__ = name
    return call


def _operator(ufunc, reflected=False):
    def method(self, other):
        if getattr(other, "__array_priority__", 0) > self.__array_priority__ and not isinstance(other, ndarray):
            return NotImplemented   # CuPy's rule: the other operand's reflected method decides
        a, b = (other, self) if reflected else (self, other)
        return device_function(ufunc)(a, b)
    return method


def _in_place(ufunc):
    def method(self, other):
        ufunc(self._a, _unwrap(other, ufunc.__name__), out=self._a)
        return self
    return method


class ndarray:
    """A CuPy array stand-in on NumPy memory (see the module docstring)."""

    __array_priority__ = 100   # NumPy defers binary operators to this type

    def __init__(self, array):
        self._a = array

    # -- what a CuPy array has, computed on the host memory -------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray(self._a.T))

    @property
    def base(self):
        return None if self._a.base is None else ndarray(self._a.base)

    @property
    def __cuda_array_interface__(self):
        """The memory's address, as a CUDA array would give it (read by tests/cupy_standin/
        simulator.py, which hands the memory to Numba's CUDA simulator)."""
        interface = dict(self._a.__array_interface__)
        interface["version"] = 3
        return interface

    def __getattr__(self, name):
        if name.startswith("__") or name == "_a":
            # NumPy probes __array_interface__ & co. to convert: those must not reach the memory.
            raise AttributeError(name)
        attribute = getattr(self._a, name)
        return device_function(attribute, name) if callable(attribute) else _wrap(attribute)

    def __getitem__(self, index):
        return _wrap(self._a[_index(index)])

    def __setitem__(self, index, value):
        self._a[_index(index)] = _unwrap(value, "__setitem__")

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    # -- to the host: only explicitly, and counted ----------------------------------------------
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
                        "construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method != "__call__":
            return NotImplemented
        return device_function(ufunc)(*inputs, **kwargs)

    def __array_function__(self, function, types, args, kwargs):
        return device_function(function)(*args, **kwargs)

    def get(self, stream=None, out=None):
        _count_transfer()
        return self._a.copy()

    def item(self):
        _count_transfer()
        return self._a.item()

    def tolist(self):
        _count_transfer()
        return self._a.tolist()

    def set(self, array):
        self._a[...] = np.asarray(array)

    def _scalar(self, convert):
        if self.size != 1:
            raise TypeError("only length-1 arrays can be converted to Python scalars")
        _count_transfer()
        return convert(self._a.reshape(()).item())

    def __float__(self):
        return self._scalar(float)

    def __int__(self):
        return self._scalar(int)

    def __complex__(self):
        return self._scalar(complex)

    def __bool__(self):
        if self.size != 1:
            raise ValueError("The truth value of an array with more than one element is ambiguous.")
        return self._scalar(bool)

    def __repr__(self):
        _count_transfer()
        return repr(self._a).replace("array(", "cupy_standin.array(", 1)

    __str__ = __repr__

    def __format__(self, spec):
        return format(self._scalar(lambda v: v) if self.ndim == 0 else str(self), spec)

    # -- arithmetic: NumPy's ufuncs on the memory, host arrays refused --------------------------
    __add__, __radd__ = _operator(np.add), _operator(np.add, True)
    __sub__, __rsub__ = _operator(np.subtract), _operator(np.subtract, True)
    __mul__, __rmul__ = _operator(np.multiply), _operator(np.multiply, True)
    __truediv__, __rtruediv__ = _operator(np.true_divide), _operator(np.true_divide, True)
    __floordiv__, __rfloordiv__ = _operator(np.floor_divide), _operator(np.floor_divide, True)
    __mod__, __rmod__ = _operator(np.remainder), _operator(np.remainder, True)
    __pow__, __rpow__ = _operator(np.power), _operator(np.power, True)
    __matmul__, __rmatmul__ = _operator(np.matmul), _operator(np.matmul, True)
    __and__, __rand__ = _operator(np.bitwise_and), _operator(np.bitwise_and, True)
    __or__, __ror__ = _operator(np.bitwise_or), _operator(np.bitwise_or, True)
    __xor__, __rxor__ = _operator(np.bitwise_xor), _operator(np.bitwise_xor, True)
    __lshift__, __rshift__ = _operator(np.left_shift), _operator(np.right_shift)
    __lt__, __le__ = _operator(np.less), _operator(np.less_equal)
    __gt__, __ge__ = _operator(np.greater), _operator(np.greater_equal)
    __eq__, __ne__ = _operator(np.equal), _operator(np.not_equal)
    __iadd__, __isub__ = _in_place(np.add), _in_place(np.subtract)
    __imul__, __itruediv__ = _in_place(np.multiply), _in_place(np.true_divide)
    __hash__ = None

    def __neg__(self):
        return ndarray(-self._a)

    def __pos__(self):
        return self

    def __abs__(self):
        return ndarray(np.abs(self._a))

    def __invert__(self):
        return ndarray(~self._a)


ndarray.__module__ = "cupy"       # is_cupy_array tests type(x).__module__.startswith("cupy")
ndarray.__qualname__ = "ndarray"


def _index(index):
    """An index into the memory: stand-in arrays unwrapped (NumPy index arrays are allowed: CuPy
    copies them to the device)."""
    if isinstance(index, tuple):
        return tuple(_index(i) for i in index)
    return index._a if isinstance(index, ndarray) else index


# -- module level -------------------------------------------------------------------------------
def asarray(a, dtype=None, order=None):
    """A device array: a stand-in array as it is (cast when dtype says), host data copied in."""
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    return ndarray(np.array(_unwrap(a, "asarray") if isinstance(a, (list, tuple)) else a,
                            dtype=dtype, order=order or "K"))


def array(a, dtype=None, copy=True, order="K", ndmin=0):
    if isinstance(a, ndarray):
        return ndarray(np.array(a._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin))
    a = _unwrap(a, "array") if isinstance(a, (list, tuple)) else a
    return ndarray(np.array(a, dtype=dtype, order=order, ndmin=ndmin))


def asnumpy(a, stream=None, out=None):
    """The explicit copy to the host (counted)."""
    if isinstance(a, ndarray):
        _count_transfer()
        return a._a.copy()
    return np.asarray(a)


def get_array_module(*args):
    return sys.modules["cupy"] if any(isinstance(a, ndarray) for a in args) else np


def module_getattr(name, namespace=np):
    """`cupy.<name>`: NumPy's, with arrays in and out as stand-in arrays; dtypes and classes as
    they are (CuPy uses NumPy's dtypes)."""
    attribute = getattr(namespace, name)
    if isinstance(attribute, type) or not callable(attribute):
        return attribute
    return device_function(attribute, name)
