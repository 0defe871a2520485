"""Exercise softmax: backward of y = softmax(x) over the last axis, one product and one row sum

For one row, y_i = exp(x_i) / sum_j exp(x_j). Its Jacobian is

    dy_i / dx_j = y_i (delta_ij - y_j)

so for an upstream gradient dy (the gradient of the loss w.r.t. y)

    dx_j = sum_i dy_i y_i (delta_ij - y_j) = y_j (dy_j - sum_i dy_i y_i)

The (C, C) Jacobian never needs to exist: one elementwise product and one sum per row.

Fill in every function that raises NotImplementedError, then check your work:

    python -m miniclip.exercises check softmax exercises/softmax.py

The notebook tutorials/03_gradcheck.ipynb derives this step by step.
"""

import numpy as np


def softmax_backward(dy, y):
    """dx for y = softmax(x, axis=-1); dy and y have x's shape (..., C)."""
    raise NotImplementedError("softmax_backward is not written yet")
