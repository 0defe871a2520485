"""Elementwise functions of one tensor. Each backward is dy times the derivative at x:

    exp: e^x      log: 1/x      sqrt: 1/(2 sqrt x)     tanh: 1 - tanh^2     sigmoid: s (1 - s)
    relu: 1 where x > 0 (0 at the kink x = 0, as torch)   abs: sign(x) (0 at x = 0)
    clamp: 1 inside [min, max], 0 where the value was clipped (1 on the bounds, as torch)
"""
import numpy as np

from miniclip.backend import get_array_module
from miniclip.tensor import Function


class Exp(Function):
    def forward(self, x):
        self.y = get_array_module(x).exp(x)
        return self.y

    def backward(self, dy):
        return dy * self.y


class Log(Function):
    def forward(self, x):
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, dy):
        return dy / self.x


class Sqrt(Function):
    def forward(self, x):
        self.y = get_array_module(x).sqrt(x)
        return self.y

    def backward(self, dy):
        return dy / (2 * self.y)


class Tanh(Function):
    def forward(self, x):
        self.y = get_array_module(x).tanh(x)
        return self.y

    def backward(self, dy):
        return dy * (1 - self.y * self.y)


class Sigmoid(Function):
    """s(x) = 1 / (1 + e^-x), computed as (1 + tanh(x/2)) / 2, which never overflows."""

    def forward(self, x):
        self.y = 0.5 * (1 + get_array_module(x).tanh(0.5 * x))
        return self.y

    def backward(self, dy):
        return dy * self.y * (1 - self.y)


class Relu(Function):
    def forward(self, x):
        self.positive = x > 0
        return x * self.positive

    def backward(self, dy):
        return dy * self.positive


class Abs(Function):
    def forward(self, x):
        xp = get_array_module(x)
        self.sign = xp.sign(x)
        return xp.abs(x)

    def backward(self, dy):
        return dy * self.sign


class Clamp(Function):
    def forward(self, x, min=None, max=None):
        inside = get_array_module(x).ones(x.shape, dtype=bool)
        if min is not None:
            inside &= x >= min
        if max is not None:
            inside &= x <= max
        self.inside = inside
        return x.clip(min, max)

    def backward(self, dy):
        return dy * self.inside


class Cast(Function):
    """Change the dtype; the gradient is cast back to the input's dtype."""

    def forward(self, x, dtype=np.float32):
        self.x_dtype = x.dtype
        return x.astype(dtype)

    def backward(self, dy):
        return dy.astype(self.x_dtype)


def exp(x):
    return Exp.apply(x)


def log(x):
    return Log.apply(x)


def sqrt(x):
    return Sqrt.apply(x)


def tanh(x):
    return Tanh.apply(x)


def sigmoid(x):
    return Sigmoid.apply(x)


def relu(x):
    return Relu.apply(x)


def abs(x):
    return Abs.apply(x)


def clamp(x, min=None, max=None):
    return Clamp.apply(x, min=min, max=max)


def cast(x, dtype):
    return Cast.apply(x, dtype=dtype)
