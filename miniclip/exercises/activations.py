"""Exercise activations: the backward of tanh and sigmoid, elementwise."""
import numpy as np

from miniclip import ops
from miniclip.exercises._harness import Case

TITLE = "backward of tanh and sigmoid, written with the forward's output y"
TUTORIAL = "tutorials/00_scalar_autograd.ipynb"
MATH = """
Two elementwise functions, on arrays of any shape:

    y = tanh(x)    = (e^x - e^-x) / (e^x + e^-x)
    y = sigmoid(x) = 1 / (1 + e^-x)

Given the upstream gradient dy (y's shape) and the forward's output y, what is dx? Write each
derivative with y, not x: the forward already computed y, so the backward needs no exp.
"""
HINTS = (
    """
    Each y_i depends on x_i alone, so dx_i = dy_i * (dy_i/dx_i): the Jacobian is diagonal, and the
    backward is an elementwise product. Differentiate each function of one variable, then look
    for y in the result.
    """,
    """
    tanh: quotient rule on (e^x - e^-x) / (e^x + e^-x); the numerator's derivative is the
    denominator and the other way round. sigmoid: chain rule on u^-1 with u = 1 + e^-x, then write
    e^-x / (1 + e^-x) with sigmoid itself. Both derivatives are polynomials in y.
    """,
    """
    dtanh/dx    = 1 - tanh(x)^2 = 1 - y^2                 ->  dx = dy * (1 - y * y)
    dsigmoid/dx = sigmoid(x) (1 - sigmoid(x)) = y (1 - y)  ->  dx = dy * y * (1 - y)
    """,
)


def tanh_backward(dy, y):
    """dx for y = tanh(x), from dy and the forward's output y (both of x's shape, any shape)."""
    return dy * (1 - y * y)


def sigmoid_backward(dy, y):
    """dx for y = sigmoid(x), from dy and the forward's output y (both of x's shape, any shape)."""
    return dy * y * (1 - y)


FILL = [tanh_backward, sigmoid_backward]
RETURNS = {"tanh_backward": ("x",), "sigmoid_backward": ("x",)}


def _case(name, shape, rng):
    x = rng.standard_normal(shape) * 2
    f = {"tanh": np.tanh, "sigmoid": lambda x: 1 / (1 + np.exp(-x))}[name]

    def forward(x):
        y = f(x)
        return y, y

    def backward(learner, dy, y):
        return {"x": getattr(learner, f"{name}_backward")(dy, y)}

    return Case(f"{name} on x {shape}", {"x": x}, forward, backward, getattr(ops, name))


def cases():
    rng = np.random.default_rng(0)
    return [_case(name, shape, rng) for name in ("tanh", "sigmoid") for shape in [(7,), (3, 5), ()]]
