"""Exercise broadcast: backward of x * y and x / y with broadcasting: sum the gradient back to each input's shape

NumPy broadcasting stretches x and y to a common shape before multiplying: z = x * y has
z.shape = broadcast(x.shape, y.shape). Every element of x that was stretched is used by several
elements of z, so its gradient is the SUM of their contributions:

    z = x * y:   dx = sum_to_shape(dz * y, x.shape),    dy = sum_to_shape(dz * x, y.shape)
    z = x / y:   dx = sum_to_shape(dz / y, x.shape),    dy = sum_to_shape(-dz * x / y**2, y.shape)

sum_to_shape(g, shape) undoes broadcasting: it sums g over the leading dimensions that
broadcasting added, and over every dimension where `shape` has size 1 but g does not.

Fill in every function that raises NotImplementedError, then check your work:

    python -m miniclip.exercises check broadcast exercises/broadcast.py

The notebook tutorials/02_broadcasting.ipynb derives this step by step.
"""

import numpy as np


def sum_to_shape(g, shape):
    """Sum g (the broadcast shape) back to `shape`, the shape of an input before broadcasting.

    Example: g (2, 3, 4) and shape (3, 1): sum over axis 0 (added), then axis 2 with keepdims
    (stretched from 1 to 4); the result has shape (3, 1).
    """
    raise NotImplementedError("sum_to_shape is not written yet")


def mul_backward(dz, x, y):
    """(dx, dy) for z = x * y (NumPy broadcasting); dz has z's shape, dx x's, dy y's."""
    raise NotImplementedError("mul_backward is not written yet")


def div_backward(dz, x, y):
    """(dx, dy) for z = x / y (NumPy broadcasting); dz has z's shape, dx x's, dy y's."""
    raise NotImplementedError("div_backward is not written yet")
