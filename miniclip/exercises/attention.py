"""Exercise attention: the backward of attention from the saved lse and D = rowsum(dO * O)."""
import numpy as np

from miniclip.exercises._harness import Case
from miniclip.kernels.attention import reference

TITLE = "backward of attention O = softmax(scale Q K^T) V, from O and lse (P is not stored)"
TUTORIAL = "tutorials/06_flash_attention.ipynb"
MATH = """
For each (batch, head), with Q (Tq, d), K and V (Tk, d):

    S = scale * Q K^T    (Tq, Tk),     lse_i = log sum_j exp(S_ij),     P = exp(S - lse)
    O = P V              (Tq, d)

Flash attention keeps only O and lse (Tq,) from the forward, never P. Given dO (Tq, d), what are
dQ, dK and dV? P may be recomputed from lse, but the softmax's backward needs one number per
row: can you get it from two (Tq, d) arrays instead of two (Tq, Tk) ones? The arrays here are
(B, H, T, d).
"""
HINTS = (
    """
    Go backward one line of the forward at a time: O = P V is a matrix product (the matmul
    exercise), P = softmax(S) row by row (the softmax exercise), S = scale Q K^T a matrix product
    again. P comes back as exp(S - lse), without a max or a sum.
    """,
    """
    dV and dP from O = P V; dS from the softmax backward, dS = P * (dP - D[:, None]) with
    D_i = sum_j P_ij dP_ij; dQ and dK from S = scale Q K^T (the scale stays in both). For D,
    substitute dP = dO V^T and O = P V into sum_j P_ij dP_ij, and swap the two sums.
    """,
    """
    dV = P^T dO,      dP = dO V^T,      D_i = sum_c dO_ic O_ic   (= sum_j P_ij dP_ij)
    dS = P * (dP - D[:, None]),         dQ = scale * dS K,        dK = scale * dS^T Q
    """,
)


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
