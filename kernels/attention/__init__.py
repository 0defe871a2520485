"""Scaled dot-product attention, O = softmax(scale * Q K^T + mask) V, and its backward.

    o, lse = attention_forward(q, k, v, scale, is_causal=False, mask=None, out=None)
    dq, dk, dv = attention_backward(q, k, v, o, lse, do, scale, is_causal=False, mask=None,
                                    dq=None, dk=None, dv=None)

q is (B, H, Tq, d), k and v are (B, H, Tk, d) (Tq may differ from Tk), float32 or float64.
mask is an additive float mask broadcastable to (B, H, Tq, Tk) (0 keeps a key, -inf hides it);
is_causal hides key j from query i when j > i. lse (B, H, Tq) is each row's log-sum-exp of the
scores: the backward recomputes the attention weights from it instead of storing them.

out (and dq, dk, dv) are optional arrays for the results, of q's (k's) shape and dtype, typically
strided views: multi-head attention passes o as the (B, H, T, d) transpose of a (B, T, H, d)
array, so the heads come out already concatenated, and dq, dk, dv as views of one
(B, T, 3, H, d) array, the gradient of the packed q/k/v projection (functional/attention.py,
PackedSelfAttention). The function returns those same arrays. numba_cpu writes into them in
place; the reference and numba_cuda compute into fresh arrays and copy once.

Implementations (see each file's docstring):
    reference.py   the plain materialised softmax(Q K^T) V in NumPy/CuPy: the definition
    numba_cpu.py   FlashAttention-2 tiles: BLAS matmuls, Numba online softmax, a thread per head group
    numba_cuda.py  numba.cuda kernels, v1 (a thread per row) and v2 (FlashAttention-2 tiles)

Which one runs: the reference when miniclip.kernels.mode() == "reference", else numba_cpu for
NumPy arrays and the newest numba_cuda version for CuPy arrays.
"""
from .. import pick


def attention_forward(q, k, v, scale, is_causal=False, mask=None, out=None):
    """softmax(scale * q k^T + mask) v for (B, H, T, d) arrays; returns (o, lse), o in `out` if given."""
    return pick("attention", q).attention_forward(q, k, v, scale, is_causal=is_causal, mask=mask, out=out)


def attention_backward(q, k, v, o, lse, do, scale, is_causal=False, mask=None, dq=None, dk=None, dv=None):
    """Gradients (dq, dk, dv) of attention_forward, given its (o, lse) and the upstream do; written
    into dq, dk, dv where they are given."""
    return pick("attention", q).attention_backward(q, k, v, o, lse, do, scale, is_causal=is_causal, mask=mask,
                                                   dq=dq, dk=dk, dv=dv)
