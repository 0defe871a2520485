"""Exercise softmax_xent: the backward of fused softmax cross-entropy, from the saved lse."""
import numpy as np

from miniclip import functional as F
from miniclip.exercises._harness import Case
from miniclip.kernels.softmax_xent import reference

TITLE = "backward of softmax cross-entropy per row, from the lse the forward saved"
TUTORIAL = "tutorials/05_softmax_xent_and_clip_loss.ipynb"
MATH = """
For logits x (N, C) and integer targets t (N,), the forward computes per row

    lse_i  = log sum_j exp(x_ij)            (stably: m_i + log sum_j exp(x_ij - m_i), m_i = max_j x_ij)
    loss_i = lse_i - x_i,t_i                 = -log softmax(x_i)[t_i]

and keeps lse (N,). Given the upstream gradient dy (N,) of the per-row losses, what is
dlogits (N, C)? The backward should need no max and no sum over a row: lse is enough.
"""
HINTS = (
    """
    loss_i depends on row i only. It has two terms: differentiate lse_i with respect to every
    x_ij, then the picked logit x_i,t_i (which x_ij does it depend on?).
    """,
    """
    d lse_i / d x_ij is a softmax, and it can be computed from the saved lse without a new sum;
    d x_i,t_i / d x_ij is 1 at j == t_i and 0 elsewhere (a one-hot row). Subtract, then scale
    row i by dy_i. Careful not to change the logits in place.
    """,
    """
    d loss_i / d x_ij = softmax(x_i)_j - [j == t_i] = exp(x_ij - lse_i) - [j == t_i]
    dlogits = (np.exp(logits - lse[:, None]) - onehot(targets)) * dy[:, None]
              (onehot: subtract 1 at p[np.arange(N), targets])
    """,
)


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
