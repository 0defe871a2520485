"""Exercise activations: the backward of tanh and sigmoid, elementwise."""
import numpy as np

from miniclip import ops
from miniclip.exercises._harness import Case

TITLE = "backward of tanh and sigmoid, written with the forward's output y"
TUTORIAL = "tutorials/00_scalar_autograd.ipynb"
MATH = """
Elementwise functions have a diagonal Jacobian, so the backward is dy times the derivative:

    y = tanh(x)    = (e^x - e^-x) / (e^x + e^-x),   dtanh/dx    = 1 - tanh(x)^2 = 1 - y^2
    y = sigmoid(x) = 1 / (1 + e^-x),                dsigmoid/dx = sigmoid(x) (1 - sigmoid(x)) = y (1 - y)

Both derivatives are cheapest from the output y, which the forward already computed.
"""


def tanh_backward(dy, y):
    """dx for y = tanh(x): dy (any shape) times the derivative, written with y."""
    return dy * (1 - y * y)


def sigmoid_backward(dy, y):
    """dx for y = sigmoid(x): dy (any shape) times the derivative, written with y."""
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
