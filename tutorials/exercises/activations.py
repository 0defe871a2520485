"""Exercise activations: backward of tanh and sigmoid, written with the forward's output y

Elementwise functions have a diagonal Jacobian, so the backward is dy times the derivative:

    y = tanh(x)    = (e^x - e^-x) / (e^x + e^-x),   dtanh/dx    = 1 - tanh(x)^2 = 1 - y^2
    y = sigmoid(x) = 1 / (1 + e^-x),                dsigmoid/dx = sigmoid(x) (1 - sigmoid(x)) = y (1 - y)

Both derivatives are cheapest from the output y, which the forward already computed.

Fill in every function that raises NotImplementedError, then check your work:

    python -m miniclip.exercises check activations exercises/activations.py

The notebook tutorials/00_scalar_autograd.ipynb derives this step by step.
"""

import numpy as np


def tanh_backward(dy, y):
    """dx for y = tanh(x): dy (any shape) times the derivative, written with y."""
    raise NotImplementedError("tanh_backward is not written yet")


def sigmoid_backward(dy, y):
    """dx for y = sigmoid(x): dy (any shape) times the derivative, written with y."""
    raise NotImplementedError("sigmoid_backward is not written yet")
