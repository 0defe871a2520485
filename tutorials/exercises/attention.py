"""Exercise attention: backward of attention O = softmax(scale Q K^T) V, recomputing P from lse, with D = rowsum(dO * O)

For each (batch, head), with Q (Tq, d), K and V (Tk, d):

    S = scale * Q K^T    (Tq, Tk),     lse_i = log sum_j exp(S_ij),     P = exp(S - lse)
    O = P V              (Tq, d)

Flash attention keeps only O and lse (Tq,) from the forward, never P. The backward recomputes
P = exp(S - lse) and uses

    dV = P^T dO,      dP = dO V^T,      D_i = sum_c dO_ic O_ic   (= sum_j P_ij dP_ij)
    dS = P * (dP - D[:, None]),         dQ = scale * dS K,        dK = scale * dS^T Q

Show that D_i = rowsum(P * dP) (substitute O = P V): two (Tq, d) arrays give what the softmax
backward needs, without a second pass over P. The arrays here are (B, H, T, d).

Fill in every function that raises NotImplementedError, then check your work:

    python -m miniclip.exercises check attention exercises/attention.py

The notebook tutorials/06_flash_attention.ipynb derives this step by step.
"""

import numpy as np


def attention_backward(q, k, v, o, lse, do, scale):
    """(dq, dk, dv) from q (B, H, Tq, d), k and v (B, H, Tk, d), the forward's o (B, H, Tq, d) and
    lse (B, H, Tq), and the upstream do (B, H, Tq, d).
    """
    raise NotImplementedError("attention_backward is not written yet")
