"""Exercise layer_norm: the backward of layer norm over the last dimension."""
import numpy as np

from miniclip import functional as F
from miniclip.exercises._harness import Case
from miniclip.kernels.layer_norm import reference

TITLE = "backward of layer norm over the last dimension: dx, dweight and dbias"
TUTORIAL = "tutorials/04_layer_norm.ipynb"
MATH = """
Layer norm of each row x (C values) of an (N, C) input:

    mean = sum_j x_j / C,    var = sum_j (x_j - mean)^2 / C,    rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd,      y = xhat * weight + bias

Given dy (N, C) and what the forward saved, mean and rstd (N,), what are dx (N, C),
dweight (C,) and dbias (C,)? Every x_j reaches y by more than one path: find them all.
"""
HINTS = (
    """
    weight and bias are shared by every row: their gradients add up over the rows. For dx, work
    with dxhat = dy * weight, the gradient reaching xhat. Each xhat_k of a row depends on every
    x_j of that row: directly, through mean, and through var (rstd). Each path gives one term.
    """,
    """
    Per row: d mean/dx_j = 1/C, d var/dx_j = 2 (x_j - mean) / C, d rstd/d var = -rstd^3 / 2, so
    d rstd/dx_j = -rstd^2 xhat_j / C. Add the three paths: dx_j = rstd * (dxhat_j - [a row mean of
    dxhat: the mean path] - xhat_j * [a row mean of dxhat * xhat: the variance path]).
    dweight sums dy * xhat over rows, dbias sums dy.
    """,
    """
    dx      = rstd * (dxhat - mean_j(dxhat) - xhat * mean_j(dxhat * xhat))       (per row)
            = rstd[:, None] * (dxhat - dxhat.mean(axis=1, keepdims=True)
                               - xhat * (dxhat * xhat).mean(axis=1, keepdims=True))
    dweight = (dy * xhat).sum(axis=0),     dbias = dy.sum(axis=0)
    """,
)


def layer_norm_backward(dy, x, weight, mean, rstd):
    """(dx (N, C), dweight (C,), dbias (C,)) from dy (N, C), x (N, C), weight (C,), mean and rstd (N,)."""
    xhat = (x - mean[:, None]) * rstd[:, None]                        # (N, C)
    dxhat = dy * weight                                               # (N, C)
    dx = rstd[:, None] * (dxhat - dxhat.mean(axis=1, keepdims=True)
                          - xhat * (dxhat * xhat).mean(axis=1, keepdims=True))
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


FILL = [layer_norm_backward]
RETURNS = {"layer_norm_backward": ("x", "weight", "bias")}
EPS = 1e-5


def cases():
    rng = np.random.default_rng(4)

    def forward(x, weight, bias):
        y, mean, rstd = reference.layer_norm_forward(x, weight, bias, EPS)
        return y, (x, weight, mean, rstd)

    def backward(learner, dy, saved):
        dx, dweight, dbias = learner.layer_norm_backward(dy, *saved)
        return {"x": dx, "weight": dweight, "bias": dbias}

    def library(x, weight, bias):
        return F.layer_norm(x, (x.shape[-1],), weight, bias, eps=EPS)

    out = []
    for N, C, offset in [(3, 7, 0.0), (5, 1, 0.0), (2, 13, 100.0)]:
        inputs = {"x": rng.standard_normal((N, C)) * 3 + offset, "weight": rng.uniform(0.5, 1.5, C),
                  "bias": rng.standard_normal(C)}
        out.append(Case(f"x ({N}, {C})" + (f" around {offset:g}" if offset else ""), inputs,
                        forward, backward, library))
    return out
