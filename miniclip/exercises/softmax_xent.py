"""Exercise softmax_xent: the backward of fused softmax cross-entropy, from the saved lse."""
import numpy as np

from miniclip import functional as F
from miniclip.exercises._harness import Case
from miniclip.kernels.softmax_xent import reference

TITLE = "backward of softmax cross-entropy per row: dlogits = (softmax - onehot) * dy"
TUTORIAL = "tutorials/05_softmax_xent_and_clip_loss.ipynb"
MATH = """
For logits x (N, C) and integer targets t (N,), the forward computes per row

    lse_i  = log sum_j exp(x_ij)            (stably: m_i + log sum_j exp(x_ij - m_i), m_i = max_j x_ij)
    loss_i = lse_i - x_i,t_i                 = -log softmax(x_i)[t_i]

and keeps lse (N,). Show that d loss_i / d x_ij = softmax(x_i)_j - [j == t_i], so that with the
upstream gradient dy (N,) of the per-row losses

    dlogits_ij = (exp(x_ij - lse_i) - [j == t_i]) * dy_i

softmax is recomputed from lse: no max and no sum in the backward.
"""


def softmax_xent_backward(logits, targets, lse, dy):
    """dlogits (N, C) from logits (N, C), targets (N,) ints, lse (N,) and dy (N,)."""
    p = np.exp(logits - lse[:, None])                                  # (N, C) softmax
    p[np.arange(logits.shape[0]), targets] -= 1.0
    return p * dy[:, None]


FILL = [softmax_xent_backward]
RETURNS = {"softmax_xent_backward": ("logits",)}


def cases():
    rng = np.random.default_rng(5)
    out = []
    for N, C, scale in [(4, 7, 1.0), (1, 1, 1.0), (5, 3, 1e4)]:
        targets = rng.integers(0, C, N)

        def forward(logits, targets=targets):
            loss, lse = reference.softmax_xent_forward(logits, targets)
            return loss, (logits, targets, lse)

        def backward(learner, dy, saved):
            return {"logits": learner.softmax_xent_backward(saved[0], saved[1], saved[2], dy)}

        def library(logits, targets=targets):
            return F.cross_entropy(logits, targets, reduction="none")

        logits = rng.standard_normal((N, C)) * scale
        title = f"logits ({N}, {C})" + (" of +-1e4" if scale > 1 else "")
        out.append(Case(title, {"logits": logits}, forward, backward, library))
    return out
