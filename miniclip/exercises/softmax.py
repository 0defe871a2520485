"""Exercise softmax: the backward of softmax over the last axis, without building the Jacobian."""
import numpy as np

from miniclip import functional as F
from miniclip.exercises._harness import Case

TITLE = "backward of y = softmax(x) over the last axis, one product and one row sum"
TUTORIAL = "tutorials/03_gradcheck.ipynb"
MATH = """
For one row, y_i = exp(x_i) / sum_j exp(x_j). Its Jacobian is

    dy_i / dx_j = y_i (delta_ij - y_j)

so for an upstream gradient dy (the gradient of the loss w.r.t. y)

    dx_j = sum_i dy_i y_i (delta_ij - y_j) = y_j (dy_j - sum_i dy_i y_i)

The (C, C) Jacobian never needs to exist: one elementwise product and one sum per row.
"""


def softmax_backward(dy, y):
    """dx for y = softmax(x, axis=-1); dy and y have x's shape (..., C)."""
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


FILL = [softmax_backward]
RETURNS = {"softmax_backward": ("x",)}


def cases():
    rng = np.random.default_rng(3)

    def forward(x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        y = e / e.sum(axis=-1, keepdims=True)
        return y, y

    def backward(learner, dy, y):
        return {"x": learner.softmax_backward(dy, y)}

    shapes = [(4, 7), (2, 3, 5), (3, 1), (11,)]
    return [Case(f"softmax of x {s}", {"x": rng.standard_normal(s) * 2}, forward, backward,
                 lambda x: F.softmax(x, dim=-1)) for s in shapes]
