"""Exercise broadcast: the backward of * and / when the shapes broadcast (sum back to shape)."""
import numpy as np

from miniclip import ops
from miniclip.exercises._harness import Case

TITLE = "backward of x * y and x / y with broadcasting: sum the gradient back to each input's shape"
TUTORIAL = "tutorials/02_broadcasting.ipynb"
MATH = """
NumPy broadcasting stretches x and y to a common shape before the operation: z = x * y and
z = x / y have z.shape = broadcast(x.shape, y.shape), e.g. x (3, 1) and y (4,) give z (3, 4).

Given dz (z's shape), what are dx (x's shape) and dy (y's shape)? Write sum_to_shape(g, shape),
which turns a gradient of the broadcast shape into one of `shape`, and use it in both backwards.
"""
HINTS = (
    """
    First forget broadcasting: for same-shape arrays, what are d(x*y)/dx, d(x*y)/dy, d(x/y)/dx and
    d(x/y)/dy, elementwise? Then: an element of x that broadcasting stretched is used by several
    elements of z. How do the gradients of several uses of one number combine?
    """,
    """
    Compute each gradient at the broadcast shape (dz * y, ...), then reduce it to the input's
    shape. The contributions of the several uses add up, so sum_to_shape SUMS: over the leading
    dimensions broadcasting added, then (keeping the dimension) over every dimension where
    `shape` has size 1 but g does not.
    """,
    """
    z = x * y:   dx = sum_to_shape(dz * y, x.shape),    dy = sum_to_shape(dz * x, y.shape)
    z = x / y:   dx = sum_to_shape(dz / y, x.shape),    dy = sum_to_shape(-dz * x / y**2, y.shape)
    sum_to_shape: g.sum(axis=tuple(range(g.ndim - len(shape)))), then
                  .sum(axis=<the stretched dims>, keepdims=True)
    """,
)


def sum_to_shape(g, shape):
    """Sum g (the broadcast shape) back to `shape`, the shape of an input before broadcasting.

    Example: g (2, 3, 4), the gradient of an input of shape (3, 1) that broadcasting stretched to
    (2, 3, 4), becomes an array of shape (3, 1).
    """
    shape = tuple(shape)
    n_new = g.ndim - len(shape)                                  # leading dims broadcasting added
    g = g.sum(axis=tuple(range(n_new)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=stretched, keepdims=True).reshape(shape)


def mul_backward(dz, x, y):
    """(dx, dy) for z = x * y (NumPy broadcasting); dz has z's shape, dx x's, dy y's."""
    return sum_to_shape(dz * y, x.shape), sum_to_shape(dz * x, y.shape)


def div_backward(dz, x, y):
    """(dx, dy) for z = x / y (NumPy broadcasting); dz has z's shape, dx x's, dy y's."""
    return sum_to_shape(dz / y, x.shape), sum_to_shape(-dz * x / y ** 2, y.shape)


FILL = [sum_to_shape, mul_backward, div_backward]
RETURNS = {"sum_to_shape": None, "mul_backward": ("x", "y"), "div_backward": ("x", "y")}


def _case(op, x_shape, y_shape, rng):
    x = rng.standard_normal(x_shape)
    y = rng.uniform(0.5, 2.0, y_shape) * rng.choice([-1.0, 1.0], y_shape)   # away from 0 for /
    backward = {"*": "mul_backward", "/": "div_backward"}[op]
    library = {"*": ops.mul, "/": ops.div}[op]

    def forward(x, y):
        return (x * y if op == "*" else x / y), (x, y)

    def learner_backward(learner, dz, saved):
        dx, dy = getattr(learner, backward)(dz, *saved)
        return {"x": dx, "y": dy}

    return Case(f"x {x_shape} {op} y {y_shape}", {"x": x, "y": y}, forward, learner_backward,
                lambda x, y: library(x, y))


def cases():
    rng = np.random.default_rng(2)
    shapes = [((3, 5), (3, 5)), ((3, 1), (4,)), ((2, 3, 4), (3, 1)), ((), (2, 3)), ((5, 1, 3), (1, 7, 1))]
    return [_case(op, xs, ys, rng) for op in "*/" for xs, ys in shapes]
