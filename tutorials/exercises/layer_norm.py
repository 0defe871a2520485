"""Exercise layer_norm: backward of layer norm: dx through the mean and the variance, dweight and dbias

Layer norm of each row x (C values) of an (N, C) input:

    mean = sum_j x_j / C,    var = sum_j (x_j - mean)^2 / C,    rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd,      y = xhat * weight + bias

x_j reaches y directly and through mean and rstd. With dxhat = dy * weight, derive

    dx      = rstd * (dxhat - mean_j(dxhat) - xhat * mean_j(dxhat * xhat))      (per row)
    dweight = sum over rows of dy * xhat,        dbias = sum over rows of dy

(the two means are the paths through mean and rstd). The forward gives you mean and rstd (N,).

Fill in every function that raises NotImplementedError, then check your work:

    python -m miniclip.exercises check layer_norm exercises/layer_norm.py

The notebook tutorials/04_layer_norm.ipynb derives this step by step.
"""

import numpy as np


def layer_norm_backward(dy, x, weight, mean, rstd):
    """(dx (N, C), dweight (C,), dbias (C,)) from dy (N, C), x (N, C), weight (C,), mean and rstd (N,)."""
    raise NotImplementedError("layer_norm_backward is not written yet")
