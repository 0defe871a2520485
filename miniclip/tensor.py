"""Tensor and Function: reverse-mode automatic differentiation, by hand.

A `Tensor` wraps an array (`.data`, NumPy or CuPy) and, when it was computed from tensors that
require gradients, remembers the `Function` that made it (`._ctx`). Those Function nodes form a
directed acyclic graph from the inputs to the output. `loss.backward()` walks that graph once,
from the output back to the leaves, in reverse topological order, and applies the chain rule
at every node:

    dL/dx = sum over the outputs y of f(x) of  (dL/dy) · (dy/dx)

Each Function implements `forward(*arrays)` on plain arrays and `backward(dy)`, which turns the
gradient of its output into the gradients of its inputs (a vector-Jacobian product). Gradients
of a tensor used twice accumulate: they are summed over every use. The leaves (tensors made by
the user, `requires_grad=True`) receive their sum in `.grad`.

Checked by tests/test_tensor.py (graph mechanics) and by the float64 gradient check of every op.
"""
import contextlib
import threading

import numpy as np

from miniclip import backend

_grad_mode = threading.local()


def is_grad_enabled():
    """False inside `no_grad()`: then ops build no graph."""
    return getattr(_grad_mode, "enabled", True)


@contextlib.contextmanager
def no_grad():
    """Run code without recording a graph (evaluation, optimizer updates). Also a decorator."""
    previous = is_grad_enabled()
    _grad_mode.enabled = False
    try:
        yield
    finally:
        _grad_mode.enabled = previous


class Function:
    """One node of the graph: an operation with a forward and a hand-written backward.

    Subclasses implement
      forward(self, *arrays, **options) -> array, or a tuple of arrays for several outputs
      backward(self, dy) -> one gradient array per input (None where no gradient flows);
                            with several outputs, dy is a tuple with one gradient per output
    and keep whatever the backward needs as attributes of `self` (the "saved tensors").
    They are used through `Function.apply(*inputs, **options)`.
    """

    def __init__(self):
        self.inputs = ()          # the input Tensors, kept until backward has run
        self.n_outputs = 1
        self.released = False     # True once backward freed the saved arrays

    @classmethod
    def apply(cls, *inputs, **options):
        fn = cls()
        tensors = [as_tensor(x, like=_first_tensor(inputs)) for x in inputs]
        _check_same_device(cls.__name__, tensors)
        outputs = fn.forward(*[t.data for t in tensors], **options)
        several = isinstance(outputs, tuple)
        outputs = outputs if several else (outputs,)
        requires_grad = is_grad_enabled() and any(t.requires_grad for t in tensors)
        results = tuple(Tensor(y, requires_grad=requires_grad) for y in outputs)
        if requires_grad:
            fn.inputs = tensors
            fn.n_outputs = len(results)
            for index, y in enumerate(results):
                y._ctx, y._output_index = fn, index
        else:
            fn.release()          # nothing will call backward: drop the saved arrays now
        return results if several else results[0]

    def forward(self, *arrays, **options):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def release(self):
        """Free what forward saved (every attribute but the bookkeeping), and the inputs."""
        keep = {"inputs", "n_outputs", "released"}
        for name in [n for n in vars(self) if n not in keep]:
            delattr(self, name)
        self.inputs = ()
        self.released = True


def _first_tensor(values):
    for v in values:
        if isinstance(v, Tensor):
            return v
    return None


def _check_same_device(op_name, tensors):
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        shapes = ", ".join(f"{t.device} {t.shape}" for t in tensors)
        raise RuntimeError(f"{op_name}: all inputs must be on one device, got {shapes}; "
                           "move them with .to('cpu') or .to('cuda') first")


class Tensor:
    """An array with a gradient. See the module docstring for how backward works."""

    __array_priority__ = 1000     # so that `numpy_array * tensor` calls Tensor.__rmul__

    def __init__(self, data, requires_grad=False):
        if isinstance(data, Tensor):
            data = data.data
        if not (isinstance(data, np.ndarray) or backend.is_cupy_array(data)):
            data = np.asarray(data)
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got {data.dtype}")
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None            # the Function that produced this tensor (None for a leaf)
        self._output_index = 0      # which output of _ctx this tensor is

    # ---- array-like attributes --------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    @property
    def device(self):
        return backend.device_of(self.data)

    @property
    def is_leaf(self):
        return self._ctx is None

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        device = ", device='cuda'" if self.device == "cuda" else ""
        return f"tensor({backend.to_numpy(self.data)!r}{device}{grad})"

    def numpy(self):
        """The data as a NumPy array (copied from the GPU when needed)."""
        return backend.to_numpy(self.data)

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self):
        """The same data, cut from the graph (no gradient flows through the result)."""
        return Tensor(self.data)

    def to(self, device):
        """A copy on 'cpu' or 'cuda' that stays in the graph (gradients are moved back)."""
        if device == self.device:
            return self
        from miniclip.ops import to_device
        return to_device(self, device)

    def astype(self, dtype):
        from miniclip.ops import cast
        return cast(self, dtype)

    def float(self):
        return self.astype(np.float32)

    def double(self):
        return self.astype(np.float64)

    def requires_grad_(self, requires_grad=True):
        if requires_grad and self.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got {self.dtype}")
        self.requires_grad = requires_grad
        return self

    # ---- backward -----------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Compute d(self)/d(leaf) for every leaf that requires a gradient; add it to leaf.grad.

        `grad` is dL/d(self); it may be omitted only for a one-element tensor (then it is 1).
        After the pass the graph's saved arrays are freed, unless `retain_graph=True`.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: no input of the "
                               "computation had requires_grad=True (or it ran under no_grad())")
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a one-element tensor, got "
                                   f"shape {self.shape}; pass grad= with that shape")
            grad = xp.ones_like(self.data)
        grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"backward(): grad has shape {grad.shape} but the tensor has {self.shape}")
        handed_out = {id(_memory_of(grad))}     # memory no leaf may keep as its own .grad: the caller's
        if self._ctx is None:
            _accumulate_leaf(self, grad, handed_out)
            return

        # Gradients of the outputs of each Function, filled in as the walk reaches them.
        pending = {(id(self._ctx), self._output_index): grad}
        for fn in _reverse_topological_order(self._ctx):
            if fn.released:
                raise RuntimeError(f"backward through {type(fn).__name__} a second time: its saved "
                                   "arrays were freed; call the first backward(retain_graph=True)")
            dys = [pending.pop((id(fn), i), None) for i in range(fn.n_outputs)]
            if all(dy is None for dy in dys):          # the loss does not depend on this node
                if not retain_graph:
                    fn.release()
                continue
            if fn.n_outputs == 1:
                dxs = fn.backward(dys[0])
            else:
                dxs = fn.backward(tuple(dys))
            if not isinstance(dxs, tuple):
                dxs = (dxs,)
            for x, dx in zip(fn.inputs, dxs):
                if dx is None or not x.requires_grad:
                    continue
                if dx.shape != x.shape:
                    raise RuntimeError(f"{type(fn).__name__}.backward returned a gradient of shape "
                                       f"{dx.shape} for an input of shape {x.shape}")
                if x._ctx is None:
                    _accumulate_leaf(x, dx, handed_out)
                else:
                    key = (id(x._ctx), x._output_index)
                    pending[key] = dx if key not in pending else pending[key] + dx
            if not retain_graph:
                fn.release()

    # ---- operators (the ops live in miniclip.ops; imported at the end of this module) --
    def __add__(self, other):
        return ops.add(self, other)

    def __radd__(self, other):
        return ops.add(other, self)

    def __sub__(self, other):
        return ops.sub(self, other)

    def __rsub__(self, other):
        return ops.sub(other, self)

    def __mul__(self, other):
        return ops.mul(self, other)

    def __rmul__(self, other):
        return ops.mul(other, self)

    def __truediv__(self, other):
        return ops.div(self, other)

    def __rtruediv__(self, other):
        return ops.div(other, self)

    def __pow__(self, exponent):
        return ops.pow(self, exponent)

    def __rpow__(self, base):
        return ops.pow(base, self)

    def __neg__(self):
        return ops.neg(self)

    def __matmul__(self, other):
        return ops.matmul(self, other)

    def __rmatmul__(self, other):
        return ops.matmul(other, self)

    def __getitem__(self, index):
        return ops.getitem(self, index)

    # Comparisons give boolean tensors and carry no gradient.
    def __lt__(self, other):
        return Tensor(self.data < _data(other))

    def __le__(self, other):
        return Tensor(self.data <= _data(other))

    def __gt__(self, other):
        return Tensor(self.data > _data(other))

    def __ge__(self, other):
        return Tensor(self.data >= _data(other))

    def __eq__(self, other):
        return Tensor(self.data == _data(other))

    def __ne__(self, other):
        return Tensor(self.data != _data(other))

    __hash__ = object.__hash__    # tensors are used as dict keys by identity, as in PyTorch

    def __bool__(self):
        if self.data.size != 1:
            raise RuntimeError(f"the truth value of a tensor of shape {self.shape} is ambiguous")
        return bool(self.data.reshape(()).item())

    # ---- methods with PyTorch's names -------------------------------------------------
    def sum(self, dim=None, keepdim=False, *, axis=None):
        return ops.sum(self, dim, keepdim, axis=axis)

    def mean(self, dim=None, keepdim=False, *, axis=None):
        return ops.mean(self, dim, keepdim, axis=axis)

    def max(self, dim=None, keepdim=False, *, axis=None):
        return ops.max(self, dim, keepdim, axis=axis)

    def exp(self):
        return ops.exp(self)

    def log(self):
        return ops.log(self)

    def sqrt(self):
        return ops.sqrt(self)

    def tanh(self):
        return ops.tanh(self)

    def sigmoid(self):
        return ops.sigmoid(self)

    def relu(self):
        return ops.relu(self)

    def abs(self):
        return ops.abs(self)

    def clamp(self, min=None, max=None):
        return ops.clamp(self, min, max)

    def reshape(self, *shape):
        return ops.reshape(self, _shape_args(shape))

    def view(self, *shape):
        return ops.reshape(self, _shape_args(shape))

    def flatten(self, start_dim=0, end_dim=-1):
        return ops.flatten(self, start_dim, end_dim)

    def transpose(self, dim0, dim1):
        return ops.transpose(self, dim0, dim1)

    def permute(self, *dims):
        return ops.permute(self, _shape_args(dims))

    def expand(self, *shape):
        return ops.expand(self, _shape_args(shape))

    def unsqueeze(self, dim):
        return ops.unsqueeze(self, dim)

    def squeeze(self, dim):
        return ops.squeeze(self, dim)

    def split(self, split_size_or_sections, dim=0):
        return ops.split(self, split_size_or_sections, dim)

    def chunk(self, chunks, dim=0):
        return ops.chunk(self, chunks, dim)

    def softmax(self, dim):
        from miniclip import functional
        return functional.softmax(self, dim)

    def log_softmax(self, dim):
        from miniclip import functional
        return functional.log_softmax(self, dim)

    def argmax(self, dim=None, *, axis=None):
        return Tensor(self.data.argmax(axis=ops.reduction.dim_or_axis(dim, axis)))

    @property
    def T(self):
        """The transpose, with the dimensions reversed (as numpy's .T)."""
        return ops.permute(self, tuple(reversed(range(self.ndim))))


def _shape_args(args):
    """Accept both reshape(2, 3) and reshape((2, 3)), as PyTorch does."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(args[0])
    return tuple(args)


def _data(x):
    return x.data if isinstance(x, Tensor) else x


def _accumulate_leaf(leaf, dx, handed_out):
    """leaf.grad += dx.

    The first gradient is kept as it is when that is safe: a writeable, contiguous array of the
    leaf's dtype whose memory no other leaf and not the caller of backward holds (`handed_out`,
    the memory given out so far). Most are fresh arrays a backward just made, and copying them
    all cost ~19 ms of a 1 s tiny-vit-s step. Otherwise (a view of the caller's gradient, a
    broadcast, another leaf's memory) the leaf gets a private copy: a real 0-d array, never a
    NumPy scalar, which would ignore in-place updates like grad *= c. Later gradients are added
    out of place, since the array kept may still be in use as another node's pending gradient.
    """
    if not leaf.requires_grad:
        return
    if leaf.grad is not None:
        leaf.grad = leaf.grad + dx
        return
    memory = id(_memory_of(dx))
    is_array = isinstance(dx, np.ndarray) or backend.is_cupy_array(dx)      # not a NumPy scalar
    keep = (is_array and dx.dtype == leaf.dtype and dx.flags.c_contiguous
            and getattr(dx.flags, "writeable", True) and memory not in handed_out)
    handed_out.add(memory)
    leaf.grad = dx if keep else backend.get_array_module(dx).array(dx, dtype=leaf.dtype, copy=True)


def _memory_of(array):
    """The array that owns `array`'s memory (itself, or the base of its view)."""
    while getattr(array, "base", None) is not None:
        array = array.base
    return array


def _reverse_topological_order(root):
    """Every Function reachable from `root`, each one after all the Functions that use its outputs."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:              # iterative depth-first search: deep graphs must not hit the recursion limit
        fn, children_done = stack.pop()
        if children_done:
            order.append(fn)
            continue
        if id(fn) in visited:
            continue
        visited.add(id(fn))
        stack.append((fn, True))
        for x in fn.inputs:
            if x._ctx is not None and id(x._ctx) not in visited:
                stack.append((x._ctx, False))
    return order[::-1]


def as_tensor(value, like=None):
    """`value` as a Tensor: tensors pass through; numbers take the dtype and device of `like`."""
    if isinstance(value, Tensor):
        return value
    if like is not None and (np.isscalar(value) or isinstance(value, (int, float, bool))):
        xp = backend.get_array_module(like.data)
        dtype = like.dtype if like.dtype.kind == "f" or isinstance(value, int) else np.float32
        return Tensor(xp.asarray(value, dtype=dtype))
    return Tensor(value)


def tensor(data, requires_grad=False, dtype=None):
    """Make a leaf tensor. Python floats become float32 (the default), Python ints int64;
    NumPy/CuPy arrays and NumPy scalars keep their dtype unless `dtype` is given. The data is
    copied."""
    if isinstance(data, Tensor):
        data = data.data
    if backend.is_cupy_array(data):
        array = data.astype(dtype or data.dtype, copy=True)
    else:
        array = np.array(data, dtype=dtype)
        if dtype is None and not isinstance(data, (np.ndarray, np.generic)) and array.dtype == np.float64:
            array = array.astype(np.float32)
    return Tensor(array, requires_grad=requires_grad)


from miniclip import ops  # noqa: E402  (ops need Tensor; Tensor's operators need ops)
