"""Exercise softmax: the backward of softmax over the last axis, without building the Jacobian."""
import numpy as np

from miniclip import functional as F
from miniclip.exercises._harness import Case

TITLE = "backward of y = softmax(x) over the last axis, without building the Jacobian"
TUTORIAL = "tutorials/03_gradcheck.ipynb"
MATH = """
For each row (the last axis, C values) of x (..., C):

    y_i = exp(x_i) / sum_j exp(x_j)

Given the upstream gradient dy (x's shape) and the forward's output y, what is dx? The (C, C)
Jacobian of each row need never exist: find a form that costs a few operations per element.
"""
HINTS = (
    """
    Every y_i depends on every x_j of its row, through the sum in the denominator. Start from
    the Jacobian dy_i/dx_j and treat its two cases, i == j and i != j, separately; then write it
    with y alone.
    """,
    """
    dy_i/dx_j = y_i (delta_ij - y_j). The backward is dx_j = sum_i dy_i * dy_i/dx_j. Split the
    sum into the delta term (one element) and the rest: the rest holds one number per row,
    the same for every j of that row.
    """,
    """
    dx_j = y_j (dy_j - sum_i dy_i y_i)    ->    dx = y * (dy - (dy * y).sum(axis=-1, keepdims=True))
    """,
)


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
