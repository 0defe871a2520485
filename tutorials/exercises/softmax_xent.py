"""Exercise softmax_xent: backward of softmax cross-entropy per row: dlogits = (softmax - onehot) * dy

For logits x (N, C) and integer targets t (N,), the forward computes per row

    lse_i  = log sum_j exp(x_ij)            (stably: m_i + log sum_j exp(x_ij - m_i), m_i = max_j x_ij)
    loss_i = lse_i - x_i,t_i                 = -log softmax(x_i)[t_i]

and keeps lse (N,). Show that d loss_i / d x_ij = softmax(x_i)_j - [j == t_i], so that with the
upstream gradient dy (N,) of the per-row losses

    dlogits_ij = (exp(x_ij - lse_i) - [j == t_i]) * dy_i

softmax is recomputed from lse: no max and no sum in the backward.

Fill in every function that raises NotImplementedError, then check your work:

    python -m miniclip.exercises check softmax_xent exercises/softmax_xent.py

The notebook tutorials/05_softmax_xent_and_clip_loss.ipynb derives this step by step.
"""

import numpy as np


def softmax_xent_backward(logits, targets, lse, dy):
    """dlogits (N, C) from logits (N, C), targets (N,) ints, lse (N,) and dy (N,)."""
    raise NotImplementedError("softmax_xent_backward is not written yet")
