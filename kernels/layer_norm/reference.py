"""Layer norm, GELU and QuickGELU in plain NumPy: the definition of correct.

Layer norm over the last dimension (Ba, Kiros & Hinton 2016), for a row x of C values:

    mean = sum_j x_j / C,    var = sum_j (x_j - mean)^2 / C       (biased, as torch)
    rstd = 1 / sqrt(var + eps),    xhat = (x - mean) * rstd,    y = xhat * weight + bias

Backward, with dy the gradient of y and dxhat = dy * weight:

    dx      = rstd * (dxhat - mean_j(dxhat) - xhat * mean_j(dxhat * xhat))
    dweight = sum over rows of dy * xhat,        dbias = sum over rows of dy

(y depends on x_j directly and through mean and rstd; the two means are those two paths.)

GELU (Hendrycks & Gimpel 2016), exact, and QuickGELU (CLIP's sigmoid approximation):

    gelu(x)       = x * Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2;   gelu'(x) = Phi(x) + x * phi(x)
    quick_gelu(x) = x * s,       s = sigmoid(1.702 x);          quick_gelu'(x) = s + 1.702 x s (1 - s)

with phi(x) = exp(-x^2 / 2) / sqrt(2 pi). Everything is computed in float64; mean and rstd are
returned in float64 (N values: cheap, and a float32 mean of rows around 1e3 would be off by
~3e-5, an error every xhat would carry). Other outputs have the input's dtype. Here the mean
and variance take two passes, the plain definition; the kernels take one (see numba_cpu.py).

Checked in tests/kernels/test_layer_norm.py: backward against float64 central differences,
forward and backward against torch (F.layer_norm, F.gelu, x * sigmoid(1.702 x)).
"""
import math

from miniclip.backend import erf, get_array_module


def layer_norm_forward(x, weight, bias, eps):
    """(y, mean, rstd) for x (N, C), weight and bias (C,): y like x, mean and rstd (N,) float64."""
    xp = get_array_module(x)
    x64 = x.astype(xp.float64)
    mean = x64.mean(axis=1)                                          # (N,)
    var = ((x64 - mean[:, None]) ** 2).mean(axis=1)                  # (N,)
    rstd = 1.0 / xp.sqrt(var + eps)                                  # (N,)
    xhat = (x64 - mean[:, None]) * rstd[:, None]                     # (N, C)
    y = xhat * weight.astype(xp.float64) + bias.astype(xp.float64)   # (N, C)
    return y.astype(x.dtype), mean, rstd


def layer_norm_backward(dy, x, weight, mean, rstd):
    """(dx (N, C), dweight (C,), dbias (C,)) from dy (N, C) and the saved mean, rstd (N,)."""
    xp = get_array_module(x)
    dy64 = dy.astype(xp.float64)
    xhat = (x.astype(xp.float64) - mean[:, None]) * rstd[:, None]     # (N, C)
    dxhat = dy64 * weight.astype(xp.float64)                          # (N, C)
    dx = rstd[:, None] * (dxhat - dxhat.mean(axis=1, keepdims=True)
                          - xhat * (dxhat * xhat).mean(axis=1, keepdims=True))
    dweight = (dy64 * xhat).sum(axis=0)                               # (C,)
    dbias = dy64.sum(axis=0)                                          # (C,)
    return dx.astype(x.dtype), dweight.astype(weight.dtype), dbias.astype(weight.dtype)


def _z64(x, bias):
    """x + bias (bias over the last dim, or none) in float64: the activation's argument."""
    x64 = x.astype(get_array_module(x).float64)
    return x64 if bias is None else x64 + bias.astype(x64.dtype)


def gelu_forward(x, bias=None):
    """gelu(z) = z * (1 + erf(z / sqrt 2)) / 2 of z = x (+ bias), elementwise."""
    x64 = _z64(x, bias)
    return (x64 * 0.5 * (1.0 + erf(x64 / math.sqrt(2.0)))).astype(x.dtype)


def gelu_backward(dy, x, bias=None):
    """dx = dy * (Phi(z) + z * phi(z)), z = x (+ bias)."""
    xp = get_array_module(x)
    x64 = _z64(x, bias)
    Phi = 0.5 * (1.0 + erf(x64 / math.sqrt(2.0)))
    phi = xp.exp(-0.5 * x64 * x64) / math.sqrt(2.0 * math.pi)
    return (dy.astype(xp.float64) * (Phi + x64 * phi)).astype(x.dtype)


def sigmoid(z):
    """1 / (1 + exp(-z)) without overflow: exp only ever sees -|z|."""
    xp = get_array_module(z)
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def quick_gelu_forward(x, bias=None):
    """quick_gelu(z) = z * sigmoid(1.702 z) of z = x (+ bias), elementwise."""
    x64 = _z64(x, bias)
    return (x64 * sigmoid(1.702 * x64)).astype(x.dtype)


def quick_gelu_backward(dy, x, bias=None):
    """dx = dy * (s + 1.702 z s (1 - s)), s = sigmoid(1.702 z), z = x (+ bias)."""
    x64 = _z64(x, bias)
    s = sigmoid(1.702 * x64)
    return (dy.astype(x64.dtype) * (s + 1.702 * x64 * s * (1.0 - s))).astype(x.dtype)
