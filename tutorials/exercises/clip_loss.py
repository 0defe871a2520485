"""Exercise clip_loss: gradient of the CLIP loss w.r.t. the (B, B) logits and w.r.t. logit_scale

CLIP scores B images against B texts: sims = I @ T.T (B, B), logits = logit_scale * sims, and
the pair (i, i) is the positive both for row i (image -> text) and for column i (text -> image):

    lse_row_i = log sum_j exp(logits_ij),        lse_col_j = log sum_i exp(logits_ij)
    loss      = ( mean_i (lse_row_i - logits_ii) + mean_j (lse_col_j - logits_jj) ) / 2

Each half is a mean cross-entropy (softmax - onehot, divided by B), one over rows, one over
columns, so with dy the gradient of the scalar loss:

    dlogits_ij = dy / (2B) * ( exp(logits_ij - lse_row_i) + exp(logits_ij - lse_col_j) - 2 [i == j] )
    dscale     = sum_ij dlogits_ij * sims_ij           (logits = logit_scale * sims)

(logit_scale is the multiplier itself, as in miniclip.losses; OpenCLIP learns t with
logit_scale = exp(t), so dt = logit_scale * dscale.)

Fill in every function that raises NotImplementedError, then check your work:

    python -m miniclip.exercises check clip_loss exercises/clip_loss.py

The notebook tutorials/05_softmax_xent_and_clip_loss.ipynb derives this step by step.
"""

import numpy as np


def clip_loss_backward(logits, lse_row, lse_col, dy):
    """dlogits (B, B) from logits (B, B), lse_row and lse_col (B,), and dy (a 0-d array)."""
    raise NotImplementedError("clip_loss_backward is not written yet")


def logit_scale_backward(dlogits, sims):
    """dscale (0-d) for logits = logit_scale * sims, from dlogits and sims (B, B)."""
    raise NotImplementedError("logit_scale_backward is not written yet")
