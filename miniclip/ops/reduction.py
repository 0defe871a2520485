"""Reductions: sum, mean, max over some dimensions (all of them by default).

The backward of a reduction broadcasts dy back over the reduced dimensions: every input element
contributed to its output with weight 1 (sum), 1/n (mean), or 1 if it was the maximum (max).

sum and mean of float32 (or float16) accumulate in float64, then round once to x's dtype, as
PyTorch accumulates its CPU reductions in double or pairwise. NumPy sums pairwise only along a
contiguous reduced axis; over several axes (a batch norm's N, H, W) it adds one row at a time into
the same float32 accumulator, and the rounding of a running sum of n values with a common offset
grows like n: measured on 64 x 16 x 32 x 32 values around 10, batch norm's mean was off by ~1e-5
of the std, and its weight's gradient by 6e-6 (torch: 5e-7). With float64 accumulation: 8e-7.
"""
import numpy as np

from miniclip.backend import get_array_module
from miniclip.tensor import Function


def _normalize_dims(dim, ndim):
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(d % ndim for d in dims) if ndim else ()


def accumulator_dtype(x):
    """The dtype to accumulate x's sums in: float64 for the narrower floats, else x's own (None).
    (ops/arithmetic.py's sum_to_shape, the broadcast gradients' sums, uses it too.)"""
    return np.float64 if x.dtype.kind == "f" and x.dtype.itemsize < 8 else None


def _keepdim_shape(shape, dims):
    """The shape of the result with keepdim=True: 1 in every reduced dimension."""
    return tuple(1 if i in dims else n for i, n in enumerate(shape))


class Sum(Function):
    def forward(self, x, dim=None, keepdim=False):
        self.x_shape = x.shape
        self.dims = _normalize_dims(dim, x.ndim)
        return x.sum(axis=self.dims, keepdims=keepdim, dtype=accumulator_dtype(x)).astype(x.dtype, copy=False)

    def backward(self, dy):
        dy = dy.reshape(_keepdim_shape(self.x_shape, self.dims))
        return get_array_module(dy).broadcast_to(dy, self.x_shape)


class Mean(Function):
    def forward(self, x, dim=None, keepdim=False):
        self.x_shape = x.shape
        self.dims = _normalize_dims(dim, x.ndim)
        self.count = 1
        for d in self.dims:
            self.count *= x.shape[d]
        return x.mean(axis=self.dims, keepdims=keepdim, dtype=accumulator_dtype(x)).astype(x.dtype, copy=False)

    def backward(self, dy):
        dy = dy.reshape(_keepdim_shape(self.x_shape, self.dims)) / self.count
        return get_array_module(dy).broadcast_to(dy, self.x_shape)


class Max(Function):
    """The maximum over `dim`. When several elements tie for the maximum, the gradient is shared
    equally among them (dy / number of ties), so the gradient still sums to dy; torch.amax does
    the same, and that keeps max a symmetric function of its inputs."""

    def forward(self, x, dim=None, keepdim=False):
        self.dims = _normalize_dims(dim, x.ndim)
        y = x.max(axis=self.dims, keepdims=True)
        winners = (x == y).astype(x.dtype)
        self.share = winners / winners.sum(axis=self.dims, keepdims=True)   # 1/ties at each max
        return y if keepdim else y.reshape([n for i, n in enumerate(y.shape) if i not in self.dims])

    def backward(self, dy):
        dy = dy.reshape(_keepdim_shape(self.share.shape, self.dims))
        return dy * self.share


def dim_or_axis(dim, axis):
    """The dimensions to reduce: torch accepts NumPy's name axis= for dim=, and so does miniclip."""
    if dim is not None and axis is not None:
        raise TypeError("give dim or axis (NumPy's name for it), not both")
    return dim if axis is None else axis


def sum(x, dim=None, keepdim=False, *, axis=None):
    return Sum.apply(x, dim=dim_or_axis(dim, axis), keepdim=keepdim)


def mean(x, dim=None, keepdim=False, *, axis=None):
    return Mean.apply(x, dim=dim_or_axis(dim, axis), keepdim=keepdim)


def max(x, dim=None, keepdim=False, *, axis=None):
    return Max.apply(x, dim=dim_or_axis(dim, axis), keepdim=keepdim)
