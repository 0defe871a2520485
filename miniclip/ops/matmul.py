"""Matrix multiplication, batched and broadcasting like numpy.matmul / torch.matmul.

For Z = X @ Y with X (..., n, k) and Y (..., k, m):
    dX = dZ @ Y^T        (..., n, m) @ (..., m, k) -> (..., n, k)
    dY = X^T @ dZ        (..., k, n) @ (..., n, m) -> (..., k, m)
then summed over any leading dimensions that broadcasting added. A 1-D operand is treated as a
row (on the left) or a column (on the right) vector and that dimension is removed again.

Speed: a stack of rows times one matrix, (..., n, k) @ (k, m) (every Linear layer), is done as a
single 2-D product (N, k) @ (k, m) with N = prod(...) * n, and its dY as X^T @ dZ over all N rows
at once. NumPy's batched matmul runs one small product per leading index, and with a transposed
weight (x @ w.T) falls off BLAS entirely: 35x slower on (256, 65, 128) @ (128, 384).
"""
import numpy as np

from miniclip.backend import get_array_module
from miniclip.ops.arithmetic import sum_to_shape
from miniclip.tensor import Function


class MatMul(Function):
    def forward(self, x, y):
        if x.ndim == 0 or y.ndim == 0:
            raise ValueError(f"matmul: both operands need at least 1 dimension, got {x.shape} @ {y.shape}")
        if x.shape[-1] != y.shape[-2 if y.ndim > 1 else 0]:
            raise ValueError(f"matmul: shapes {x.shape} @ {y.shape} do not match "
                             f"({x.shape[-1]} != {y.shape[-2 if y.ndim > 1 else 0]})")
        self.x, self.y = x, y
        return _matmul(get_array_module(x), x, y)

    def backward(self, dy):
        xp = get_array_module(dy)
        if self.x.ndim >= 2 and self.y.ndim == 2:    # rows @ one matrix: all rows at once
            k, m = self.y.shape
            dx = _matmul(xp, dy, self.y.T)                                        # (..., n, k)
            dw = self.x.reshape(-1, k).T @ dy.reshape(-1, m)                     # (k, m)
            return dx, dw
        x = self.x[None, :] if self.x.ndim == 1 else self.x          # (..., n, k)
        y = self.y[:, None] if self.y.ndim == 1 else self.y          # (..., k, m)
        batch = np.broadcast_shapes(x.shape[:-2], y.shape[:-2])
        dy = dy.reshape(batch + (x.shape[-2], y.shape[-1]))            # (..., n, m)
        dx = xp.matmul(dy, xp.swapaxes(y, -1, -2))                   # (..., n, k)
        dw = xp.matmul(xp.swapaxes(x, -1, -2), dy)                   # (..., k, m)
        dx = sum_to_shape(dx, x.shape).reshape(self.x.shape)
        dw = sum_to_shape(dw, y.shape).reshape(self.y.shape)
        return dx, dw


def _matmul(xp, x, y):
    """xp.matmul, with (..., n, k) @ (k, m) as one (N, k) @ (k, m) product (see the docstring)."""
    if x.ndim > 2 and y.ndim == 2:
        return (x.reshape(-1, x.shape[-1]) @ y).reshape(x.shape[:-1] + (y.shape[-1],))
    return xp.matmul(x, y)


def matmul(x, y):
    return MatMul.apply(x, y)
