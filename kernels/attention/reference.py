"""Scaled dot-product attention, the plain way: the definition every faster version is checked against.

For one head, with queries Q (Tq, d), keys K (Tk, d), values V (Tk, d), a scale (usually
1/sqrt(d)) and an additive mask M (0 where a key takes part, -inf where it does not):

    S = scale * Q K^T + M            (Tq, Tk) scores
    P = softmax(S)  (over each row)   (Tq, Tk) attention weights
    O = P V                           (Tq, d)
    lse = log sum_j exp(S_ij)         (Tq,)   the row's log-sum-exp, so that P = exp(S - lse)

The causal mask hides key j from query i when j > i (as torch's is_causal: row i sees keys 0..i).

Backward, for an upstream gradient dO (Tq, d):

    dV = P^T dO
    dP = dO V^T
    dS = P * (dP - rowsum(P * dP))    softmax's Jacobian applied row by row
    dQ = scale * dS K
    dK = scale * dS^T Q

This file keeps the whole (Tq, Tk) matrix P in memory, which is what the flash kernels avoid.
It is written against `xp` (NumPy or CuPy, DeZero style) and runs in float64 as well as
float32, so it is checked against central finite differences and against
torch.nn.functional.scaled_dot_product_attention (tests/kernels/test_attention.py).
A row whose every key is masked out has no softmax: it gives NaN, as torch does.
Output arrays passed in (out=, dq=, dk=, dv=) receive a copy of the result (checks.write_into).
"""
from miniclip.backend import get_array_module

from . import checks


def _scores(q, k, scale, is_causal, mask):
    """S = scale * Q K^T + mask, for every (batch, head) at once."""
    xp = get_array_module(q)
    S = float(scale) * (q @ k.swapaxes(-1, -2))          # (B, H, Tq, Tk); a Python float keeps q's dtype
    if is_causal:
        Tq, Tk = S.shape[-2:]
        future = xp.triu(xp.ones((Tq, Tk), dtype=bool), k=1)    # key j > query i
        S = xp.where(future, -xp.inf, S)
    if mask is not None:
        S = S + mask
    return S


def _softmax(S):
    xp = get_array_module(S)
    S_max = S.max(axis=-1, keepdims=True)                # subtract the row max: exp never overflows
    P = xp.exp(S - S_max)
    return P / P.sum(axis=-1, keepdims=True)


def attention_forward(q, k, v, scale, is_causal=False, mask=None, out=None):
    """O = softmax(scale * q k^T + mask) v; returns (o, lse) with lse of shape (B, H, Tq), o in
    `out` when it is given."""
    q, k, v, mask = checks.forward_inputs(q, k, v, is_causal, mask)
    checks.output("out", out, q)
    xp = get_array_module(q)
    S = _scores(q, k, scale, is_causal, mask)            # (B, H, Tq, Tk)
    P = _softmax(S)
    o = P @ v                                            # (B, H, Tq, d)
    S_max = S.max(axis=-1)
    lse = S_max + xp.log(xp.exp(S - S_max[..., None]).sum(axis=-1))   # (B, H, Tq)
    return checks.write_into(out, o), lse


def attention_backward(q, k, v, o, lse, do, scale, is_causal=False, mask=None, dq=None, dk=None, dv=None):
    """Gradients (dq, dk, dv) of attention_forward for the upstream gradient do, in the arrays
    dq, dk, dv when they are given.

    o and lse are what the forward returned; this plain version does not need them (it
    recomputes P from scratch, with softmax's own Jacobian), the flash versions do.
    """
    q, k, v, o, lse, do, mask = checks.backward_inputs(q, k, v, o, lse, do, is_causal, mask)
    checks.gradient_outputs(dq, dk, dv, q, k, v)
    P = _softmax(_scores(q, k, scale, is_causal, mask))  # (B, H, Tq, Tk)
    dV = P.swapaxes(-1, -2) @ do                         # (B, H, Tk, d)
    dP = do @ v.swapaxes(-1, -2)                         # (B, H, Tq, Tk)
    dS = P * (dP - (P * dP).sum(axis=-1, keepdims=True))
    dQ = float(scale) * (dS @ k)                         # (B, H, Tq, d)
    dK = float(scale) * (dS.swapaxes(-1, -2) @ q)        # (B, H, Tk, d)
    return checks.write_into(dq, dQ), checks.write_into(dk, dK), checks.write_into(dv, dV)
