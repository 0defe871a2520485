"""Ops that move elements around without changing their values.

Their backwards move the gradient back: reshape reshapes it back, permute applies the inverse
permutation, expand sums over the expanded dimensions, indexing scatter-adds into zeros (an
element picked twice by integer indexing gets both gradients), concat and stack slice it apart,
split concatenates the pieces' gradients.
"""
import numpy as np

from miniclip.backend import get_array_module, scatter_add
from miniclip.ops.arithmetic import sum_to_shape
from miniclip.tensor import Function, Tensor, as_tensor


class Reshape(Function):
    def forward(self, x, shape=()):
        self.x_shape = x.shape
        return x.reshape(shape)

    def backward(self, dy):
        return dy.reshape(self.x_shape)


class Permute(Function):
    def forward(self, x, dims=()):
        if sorted(d % x.ndim for d in dims) != list(range(x.ndim)):
            raise ValueError(f"permute: dims {tuple(dims)} are not a permutation of the {x.ndim} "
                             f"dimensions of a tensor of shape {x.shape}")
        self.dims = tuple(d % x.ndim for d in dims)
        return x.transpose(self.dims)

    def backward(self, dy):
        return dy.transpose(np.argsort(self.dims).tolist())


class BroadcastTo(Function):
    def forward(self, x, shape=()):
        self.x_shape = x.shape
        return get_array_module(x).broadcast_to(x, shape)

    def backward(self, dy):
        return sum_to_shape(dy, self.x_shape)


class GetItem(Function):
    """x[index] for basic (ints, slices, None, ...) and advanced (integer or boolean array)
    indexing. The backward scatter-adds dy into zeros of x's shape: `np.add.at` adds once per
    occurrence, so an element selected twice receives the sum of both gradients."""

    def forward(self, x, index=()):
        self.x_shape, self.x_dtype = x.shape, x.dtype
        self.index = index
        return x[index]

    def backward(self, dy):
        dx = get_array_module(dy).zeros(self.x_shape, dtype=self.x_dtype)
        scatter_add(dx, self.index, dy)
        return dx


class Concat(Function):
    def forward(self, *xs, dim=0):
        self.dim = dim % xs[0].ndim
        self.sizes = [x.shape[self.dim] for x in xs]
        return get_array_module(xs[0]).concatenate(xs, axis=self.dim)

    def backward(self, dy):
        edges = np.cumsum(self.sizes)[:-1].tolist()   # Python ints: host numbers, on either device
        return tuple(get_array_module(dy).split(dy, edges, axis=self.dim))


class Stack(Function):
    def forward(self, *xs, dim=0):
        self.dim = dim % (xs[0].ndim + 1)
        return get_array_module(xs[0]).stack(xs, axis=self.dim)

    def backward(self, dy):
        xp = get_array_module(dy)
        return tuple(xp.take(dy, i, axis=self.dim) for i in range(dy.shape[self.dim]))


class Split(Function):
    """Split into pieces along `dim`: a Function with several outputs. A piece that does not
    reach the loss gets no gradient (None); its part of dx is zero."""

    def forward(self, x, sections=(), dim=0):
        self.dim, self.x_shape, self.x_dtype = dim % x.ndim, x.shape, x.dtype
        self.sizes = list(sections)
        edges = np.cumsum(self.sizes)[:-1].tolist()   # Python ints: host numbers, on either device
        return tuple(get_array_module(x).split(x, edges, axis=self.dim))

    def backward(self, dys):
        xp = get_array_module(next(dy for dy in dys if dy is not None))
        shape = list(self.x_shape)
        pieces = []
        for size, dy in zip(self.sizes, dys):
            if dy is None:
                shape[self.dim] = size
                dy = xp.zeros(shape, dtype=self.x_dtype)
            pieces.append(dy)
        return xp.concatenate(pieces, axis=self.dim)


def reshape(x, shape):
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return Reshape.apply(x, shape=shape)


def flatten(x, start_dim=0, end_dim=-1):
    """Merge dimensions start_dim..end_dim into one (torch.flatten)."""
    shape = x.shape
    start, end = start_dim % len(shape), end_dim % len(shape)
    merged = int(np.prod(shape[start:end + 1]))
    return reshape(x, shape[:start] + (merged,) + shape[end + 1:])


def permute(x, dims):
    return Permute.apply(x, dims=tuple(dims))


def transpose(x, dim0, dim1):
    """Swap two dimensions (torch.transpose)."""
    dims = list(range(x.ndim))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return permute(x, dims)


def expand(x, shape):
    """Broadcast to `shape`; -1 keeps a dimension as it is (torch.Tensor.expand)."""
    shape = tuple(shape)
    offset = len(shape) - x.ndim
    shape = tuple(x.shape[i - offset] if n == -1 else n for i, n in enumerate(shape))
    return BroadcastTo.apply(x, shape=shape)


def broadcast_to(x, shape):
    return BroadcastTo.apply(x, shape=tuple(shape))


def unsqueeze(x, dim):
    dim = dim % (x.ndim + 1)
    return reshape(x, x.shape[:dim] + (1,) + x.shape[dim:])


def squeeze(x, dim):
    dim = dim % x.ndim
    if x.shape[dim] != 1:
        return x
    return reshape(x, x.shape[:dim] + x.shape[dim + 1:])


def getitem(x, index):
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return GetItem.apply(x, index=index)


def concat(tensors, dim=0):
    return Concat.apply(*tensors, dim=dim)


cat = concat          # torch's name


def stack(tensors, dim=0):
    return Stack.apply(*tensors, dim=dim)


def split(x, split_size_or_sections, dim=0):
    """Pieces of size `split_size` (the last may be smaller), or of the given sizes (torch.split)."""
    x = as_tensor(x)
    length = x.shape[dim]
    if isinstance(split_size_or_sections, int):
        size = split_size_or_sections
        sections = [min(size, length - start) for start in range(0, length, size)]
    else:
        sections = list(split_size_or_sections)
        if sum(sections) != length:
            raise ValueError(f"split: sections {sections} add up to {sum(sections)}, but "
                             f"dimension {dim} has size {length}")
    pieces = Split.apply(x, sections=tuple(sections), dim=dim)
    return pieces if isinstance(pieces, tuple) else (pieces,)


def chunk(x, chunks, dim=0):
    """`chunks` pieces of (nearly) equal size (torch.chunk)."""
    length = as_tensor(x).shape[dim]
    return split(x, -(-length // chunks), dim)
