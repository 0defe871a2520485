"""Exercise clip_loss: the gradient of the CLIP loss w.r.t. the logits and the logit scale."""
import numpy as np

from miniclip import functional as F
from miniclip import losses
from miniclip.exercises._harness import Case
from miniclip.kernels.softmax_xent import reference

TITLE = "gradient of the CLIP loss w.r.t. the (B, B) logits and w.r.t. logit_scale"
TUTORIAL = "tutorials/05_softmax_xent_and_clip_loss.ipynb"
ORDER = 1                           # after softmax_xent: each half of this loss is one of those
MATH = """
CLIP scores B images against B texts: sims = I @ T.T (B, B), logits = logit_scale * sims, and
the pair (i, i) is the positive both for row i (image -> text) and for column i (text -> image):

    lse_row_i = log sum_j exp(logits_ij),        lse_col_j = log sum_i exp(logits_ij)
    loss      = ( mean_i (lse_row_i - logits_ii) + mean_j (lse_col_j - logits_jj) ) / 2

Given dy (the upstream gradient of the scalar loss, a 0-d array) and the saved lse_row and
lse_col (B,), what is dlogits (B, B)? And, given dlogits, what is dscale, the gradient of
logit_scale? (logit_scale is the multiplier itself, as in miniclip.losses; OpenCLIP learns t
with logit_scale = exp(t), so there dt = logit_scale * dscale.)
"""
HINTS = (
    """
    Each half of the loss is a mean cross-entropy with targets 0..B-1, the softmax_xent
    exercise: one over the rows, one over the columns (the transposed logits). Every logit_ij
    appears in both. Then logit_scale multiplies every sims_ij: the chain rule, once per entry.
    """,
    """
    Row half: (softmax of each row - identity) / B. Column half: (softmax of each column -
    identity) / B, the softmaxes recomputed from lse_row and lse_col. Add the halves, halve the
    sum, multiply by dy. dscale = sum over all (i, j) of dlogits_ij * d logits_ij / d logit_scale.
    """,
    """
    dlogits_ij = dy / (2B) * ( exp(logits_ij - lse_row_i) + exp(logits_ij - lse_col_j) - 2 [i == j] )
    dscale     = sum_ij dlogits_ij * sims_ij           ->   (dlogits * sims).sum()
    """,
)


def clip_loss_backward(logits, lse_row, lse_col, dy):
    """dlogits (B, B) from logits (B, B), lse_row and lse_col (B,), and dy (a 0-d array)."""
    B = logits.shape[0]
    p_row = np.exp(logits - lse_row[:, None])                         # (B, B) softmax of each row
    p_col = np.exp(logits - lse_col[None, :])                         # (B, B) softmax of each column
    return dy / (2 * B) * (p_row + p_col - 2 * np.eye(B))


def logit_scale_backward(dlogits, sims):
    """dscale (0-d) for logits = logit_scale * sims, from dlogits and sims (B, B)."""
    return (dlogits * sims).sum()


FILL = [clip_loss_backward, logit_scale_backward]
RETURNS = {"clip_loss_backward": ("logits",), "logit_scale_backward": ("logit_scale",)}


def _from_logits(logits):
    labels = np.arange(logits.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def cases():
    rng = np.random.default_rng(6)

    def forward(logits):
        loss, lse_row, lse_col = reference.clip_loss_forward(logits)
        return loss, (logits, lse_row, lse_col)

    def backward(learner, dy, saved):
        return {"logits": learner.clip_loss_backward(*saved, dy)}

    out = [Case(f"logits ({B}, {B})", {"logits": rng.standard_normal((B, B)) * 3}, forward, backward,
                _from_logits) for B in (5, 1)]

    def forward_features(image_features, text_features, logit_scale):
        sims = image_features @ text_features.T                       # (B, B)
        loss, lse_row, lse_col = reference.clip_loss_forward(logit_scale * sims)
        return loss, (image_features, text_features, logit_scale, sims, lse_row, lse_col)

    def backward_features(learner, dy, saved):
        image_features, text_features, logit_scale, sims, lse_row, lse_col = saved
        dlogits = learner.clip_loss_backward(logit_scale * sims, lse_row, lse_col, dy)
        dsims = logit_scale * dlogits                                 # (B, B)
        return {"image_features": dsims @ text_features, "text_features": dsims.T @ image_features,
                "logit_scale": learner.logit_scale_backward(dlogits, sims)}

    B, D = 6, 4
    features = {"image_features": rng.standard_normal((B, D)) / 2,
                "text_features": rng.standard_normal((B, D)) / 2,
                "logit_scale": np.array(2.5)}
    out.append(Case(f"features ({B}, {D}) through miniclip.losses.clip_loss", features,
                    forward_features, backward_features, losses.clip_loss))
    return out
