"""Matrix multiplication, batched and broadcasting like numpy.matmul / torch.matmul.

For Z = X @ Y with X (..., n, k) and Y (..., k, m):
    dX = dZ @ Y^T        (..., n, m) @ (..., m, k) -> (..., n, k)
    dY = X^T @ dZ        (..., k, n) @ (..., n, m) -> (..., k, m)
then summed over any leading dimensions that broadcasting added. A 1-D operand is treated as a
row (on the left) or a column (on the right) vector and that dimension is removed again.
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
        return get_array_module(x).matmul(x, y)

    def backward(self, dy):
        xp = get_array_module(dy)
        x = self.x[None, :] if self.x.ndim == 1 else self.x          # (..., n, k)
        y = self.y[:, None] if self.y.ndim == 1 else self.y          # (..., k, m)
        batch = np.broadcast_shapes(x.shape[:-2], y.shape[:-2])
        dy = dy.reshape(batch + (x.shape[-2], y.shape[-1]))            # (..., n, m)
        dx = xp.matmul(dy, xp.swapaxes(y, -1, -2))                   # (..., n, k)
        dw = xp.matmul(xp.swapaxes(x, -1, -2), dy)                   # (..., k, m)
        dx = sum_to_shape(dx, x.shape).reshape(self.x.shape)
        dw = sum_to_shape(dw, y.shape).reshape(self.y.shape)
        return dx, dw


def matmul(x, y):
    return MatMul.apply(x, y)
