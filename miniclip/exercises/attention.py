"""Exercise attention: the backward of attention from the saved lse and D = rowsum(dO * O)."""
import numpy as np

from miniclip.exercises._harness import Case
from miniclip.kernels.attention import reference

TITLE = "backward of attention O = softmax(scale Q K^T) V, recomputing P from lse, with D = rowsum(dO * O)"
TUTORIAL = "tutorials/06_flash_attention.ipynb"
MATH = """
For each (batch, head), with Q (Tq, d), K and V (Tk, d):

    S = scale * Q K^T    (Tq, Tk),     lse_i = log sum_j exp(S_ij),     P = exp(S - lse)
    O = P V              (Tq, d)

Flash attention keeps only O and lse (Tq,) from the forward, never P. The backward recomputes
P = exp(S - lse) and uses

    dV = P^T dO,      dP = dO V^T,      D_i = sum_c dO_ic O_ic   (= sum_j P_ij dP_ij)
    dS = P * (dP - D[:, None]),         dQ = scale * dS K,        dK = scale * dS^T Q

Show that D_i = rowsum(P * dP) (substitute O = P V): two (Tq, d) arrays give what the softmax
backward needs, without a second pass over P. The arrays here are (B, H, T, d).
"""


def attention_backward(q, k, v, o, lse, do, scale):
    """(dq, dk, dv) from q (B, H, Tq, d), k and v (B, H, Tk, d), the forward's o (B, H, Tq, d) and
    lse (B, H, Tq), and the upstream do (B, H, Tq, d)."""
    S = scale * (q @ k.swapaxes(-1, -2))                               # (B, H, Tq, Tk)
    P = np.exp(S - lse[..., None])                                      # recomputed, not stored
    dv = P.swapaxes(-1, -2) @ do                                        # (B, H, Tk, d)
    dP = do @ v.swapaxes(-1, -2)                                        # (B, H, Tq, Tk)
    D = (do * o).sum(axis=-1)                                           # (B, H, Tq)
    dS = P * (dP - D[..., None])
    return scale * (dS @ k), scale * (dS.swapaxes(-1, -2) @ q), dv


FILL = [attention_backward]
RETURNS = {"attention_backward": ("q", "k", "v")}


def cases():
    rng = np.random.default_rng(7)
    out = []
    for B, H, Tq, Tk, d in [(1, 2, 5, 7, 3), (2, 1, 1, 1, 4), (1, 1, 6, 6, 2)]:
        scale = 1 / np.sqrt(d)

        def forward(q, k, v, scale=scale):
            o, lse = reference.attention_forward(q, k, v, scale)
            return o, (q, k, v, o, lse, scale)

        def backward(learner, do, saved):
            q, k, v, o, lse, scale = saved
            dq, dk, dv = learner.attention_backward(q, k, v, o, lse, do, scale)
            return {"q": dq, "k": dk, "v": dv}

        def library(q, k, v):
            from miniclip import functional as F
            return F.scaled_dot_product_attention(q, k, v)

        inputs = {"q": rng.standard_normal((B, H, Tq, d)), "k": rng.standard_normal((B, H, Tk, d)),
                  "v": rng.standard_normal((B, H, Tk, d))}
        out.append(Case(f"q ({B}, {H}, {Tq}, {d}), k and v ({B}, {H}, {Tk}, {d})", inputs, forward,
                        backward, library))
    return out
