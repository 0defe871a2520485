"""Scaled dot-product attention (Vaswani et al. 2017): a fused flash kernel, and the composed oracle.

For queries Q (..., L, E), keys K (..., S, E) and values V (..., S, Ev):

    scores = Q @ K^T * scale                 (..., L, S)      scale = 1 / sqrt(E) by default
    scores = where(mask, scores, -inf)       a boolean mask: True = this query may attend to this key
      or   = scores + mask                   an additive float mask (0 keep, -inf or large negative drop)
    out    = softmax(scores, dim=-1) @ V     (..., L, Ev)

is_causal=True keeps key j for query i only when j <= i (the lower triangle of an (L, S) matrix,
as torch). A row whose keys are all masked has no defined softmax and gives NaN, as in torch.

Two paths behind one signature:
- scaled_dot_product_attention runs the flash kernels of miniclip.kernels.attention through
  FusedAttention: the forward keeps only O and the row log-sum-exp, the backward recomputes the
  weights from them (kernels/attention/ has the math), so no (L, S) matrix outlives the call.
- scaled_dot_product_attention_composed writes the softmax out from the primitives and autograd
  derives its backward. It is the kernel's test oracle, and the fallback for what the kernel does
  not take: a boolean mask, dropout_p > 0, a mask that needs a gradient, Ev != E, query, key and
  value with different leading dimensions (broadcast), more than 4 dimensions, or mixed dtypes.

Multi-head self-attention reads all three from one packed projection qkv = x W_qkv^T + b,
(B, L, 3E) = [q | k | v], each E = H D wide, and wants the H heads' outputs side by side,
(B, L, E), for the output projection. packed_self_attention does that without a layout copy,
as torch's fused MHA fast path does (PackedSelfAttention): the kernels read q, k, v as strided
(B, H, L, D) views of qkv and write o, and in the backward dq, dk, dv, straight into the layouts
the neighbouring layers use. packed_self_attention_composed splits and merges the heads with
chunk, reshape and transpose around scaled_dot_product_attention instead; autograd then
derives the backward of that layout, which costs a copy of o, of do, and a concatenation of
dq, dk, dv. It is PackedSelfAttention's oracle and its fallback (dropout, a mask needing a
gradient or not broadcasting to (B, H, L, L), dtypes other than float32 and float64).

Checked by tests/functional/test_attention.py: float64 gradcheck of both paths (T = 1, T = 7,
causal, a boolean mask leaving one key, an additive mask), the fused against the composed path
in both kernel modes, and torch.nn.functional.scaled_dot_product_attention on the same inputs,
values and gradients of Q, K and V; PackedSelfAttention by float64 gradcheck and against
packed_self_attention_composed (float32 and float64, causal, additive masks, both kernel
modes), and for sharing the memory of the kernel's saved o rather than copying it.
"""
import math

import numpy as np

from miniclip.backend import get_array_module, to_device
from miniclip.functional.activation import dropout, softmax
from miniclip.kernels import attention as attention_kernels
from miniclip.ops import matmul, transpose, where
from miniclip.tensor import Function, Tensor, as_tensor


def scaled_dot_product_attention_composed(query, key, value, attn_mask=None, dropout_p=0.0,
                                          is_causal=False, scale=None):
    """torch.nn.functional.scaled_dot_product_attention, composed from the primitives.
    dropout_p > 0 drops attention weights (always, as torch: pass 0.0 in evaluation)."""
    query, key, value = as_tensor(query), as_tensor(key), as_tensor(value)
    L, E = query.shape[-2:]
    S = key.shape[-2]
    if key.shape[-1] != E or value.shape[-2] != S:
        raise ValueError(f"scaled_dot_product_attention: expected query (..., L, E), key (..., S, E), "
                         f"value (..., S, Ev), got query {query.shape}, key {key.shape}, value {value.shape}")
    if is_causal and attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: pass either attn_mask or is_causal=True, not both")
    scale = 1 / math.sqrt(E) if scale is None else scale
    scores = matmul(query, transpose(key, -2, -1)) * scale              # (..., L, S)
    if is_causal:
        xp = get_array_module(query.data)
        attn_mask = xp.tril(xp.ones((L, S), dtype=bool))                 # key j <= query i
    if attn_mask is not None:
        if attn_mask.dtype == bool:
            keep = to_device(attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask, query.device)
            scores = where(keep, scores, -math.inf)
        else:
            scores = scores + attn_mask
    weights = softmax(scores, dim=-1)                                    # (..., L, S)
    if dropout_p > 0:
        weights = dropout(weights, dropout_p)
    return matmul(weights, value)                                        # (..., L, Ev)


class FusedAttention(Function):
    """softmax(scale * q k^T + mask) v by the flash kernels; mask is a constant additive float mask.

    The kernels take (B, H, T, d) arrays: inputs with fewer dimensions get leading 1s (and so
    does the mask, which broadcasts the same way), and the gradients are given back in the
    inputs' shapes.
    """

    def forward(self, q, k, v, scale=1.0, is_causal=False, mask=None):
        q4, k4, v4 = (x.reshape((1,) * (4 - x.ndim) + x.shape) for x in (q, k, v))   # (B, H, T, d)
        o, self.lse = attention_kernels.attention_forward(q4, k4, v4, scale, is_causal=is_causal, mask=mask)
        self.q, self.k, self.v, self.o = q4, k4, v4, o
        self.scale, self.is_causal, self.mask = scale, is_causal, mask
        return o.reshape(q.shape)                                            # (..., L, E)

    def backward(self, do):
        dq, dk, dv = attention_kernels.attention_backward(
            self.q, self.k, self.v, self.o, self.lse, do.reshape(self.o.shape), self.scale,
            is_causal=self.is_causal, mask=self.mask)
        return tuple(d.reshape(x.shape) for d, x in zip((dq, dk, dv), self.inputs))


_FLOATS = ("float32", "float64")


def _fusable(query, key, value, attn_mask, dropout_p):
    """True when the flash kernel computes exactly what the composed path would (see the docstring)."""
    if dropout_p > 0 or not 2 <= query.ndim <= 4 or query.dtype.name not in _FLOATS or 0 in query.shape:
        return False
    if not (query.dtype == key.dtype == value.dtype) or value.shape != key.shape or 0 in key.shape:
        return False
    if key.shape[-1] != query.shape[-1]:
        return False
    if query.shape[:-2] != key.shape[:-2]:
        return False
    return _constant_mask_fits(attn_mask, query.shape[:-1] + (key.shape[-2],))     # scores (..., L, S)


def _constant_mask_fits(attn_mask, scores_shape):
    """True for no mask, or an additive float mask that needs no gradient and broadcasts to the
    scores (the kernels take it as a constant and never expand it)."""
    if attn_mask is None:
        return True
    if attn_mask.dtype.kind != "f" or getattr(attn_mask, "requires_grad", False):
        return False
    try:
        return np.broadcast_shapes(attn_mask.shape, scores_shape) == scores_shape
    except ValueError:
        return False


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None):
    """torch.nn.functional.scaled_dot_product_attention: the flash kernel (FusedAttention) where
    it applies, else scaled_dot_product_attention_composed (see the module docstring)."""
    query, key, value = as_tensor(query), as_tensor(key), as_tensor(value)
    if not _fusable(query, key, value, attn_mask, dropout_p):
        return scaled_dot_product_attention_composed(query, key, value, attn_mask, dropout_p, is_causal, scale)
    if is_causal and attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: pass either attn_mask or is_causal=True, not both")
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    return FusedAttention.apply(query, key, value, scale=scale, is_causal=is_causal,
                                mask=_mask_array(attn_mask, query.device))


def _mask_array(attn_mask, device):
    """The mask as an array on `device` (or None): the Fused* Functions take it as a constant."""
    mask = attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask
    return None if mask is None else to_device(mask, device)


# --- self-attention over a packed q/k/v projection -------------------------------------------

class PackedSelfAttention(Function):
    """Self-attention over qkv = [q | k | v] (B, L, 3E), H heads of D = E / H, returning the heads'
    outputs concatenated, (B, L, E); mask is a constant additive float mask (as FusedAttention's).

    The layouts: qkv[b, l, i E + h D + c] is element c of head h of q (i = 0), k (1) or v (2), so
    qkv viewed as (B, L, 3, H, D) and permuted to (3, B, H, L, D) holds q, k, v as views whose
    rows (c) are contiguous, which the kernels read in place. The kernel writes o through the
    (B, H, L, D) transpose of a (B, L, H, D) array, whose reshape to (B, L, E) is a view: the
    output is the saved o itself. The backward mirrors it: do (B, L, E) is viewed as (B, H, L, D),
    and dq, dk, dv are written into the three views of one (B, L, 3, H, D) array, which is dqkv.
    """

    def forward(self, qkv, num_heads=1, scale=1.0, is_causal=False, mask=None):
        B, L, E3 = qkv.shape
        H, D = num_heads, E3 // (3 * num_heads)
        xp = get_array_module(qkv)
        self.q, self.k, self.v = qkv.reshape(B, L, 3, H, D).transpose(2, 0, 3, 1, 4)    # each (B, H, L, D)
        o = xp.empty((B, L, H, D), qkv.dtype)
        self.o = o.transpose(0, 2, 1, 3)                                                 # (B, H, L, D) view
        _, self.lse = attention_kernels.attention_forward(self.q, self.k, self.v, scale, is_causal=is_causal,
                                                          mask=mask, out=self.o)
        self.scale, self.is_causal, self.mask = scale, is_causal, mask
        return o.reshape(B, L, H * D)                                                    # (B, L, E), a view

    def backward(self, do):
        B, H, L, D = self.q.shape
        dqkv = get_array_module(do).empty((B, L, 3, H, D), do.dtype)
        dq, dk, dv = dqkv.transpose(2, 0, 3, 1, 4)                                       # each (B, H, L, D) view
        attention_kernels.attention_backward(
            self.q, self.k, self.v, self.o, self.lse, do.reshape(B, L, H, D).transpose(0, 2, 1, 3), self.scale,
            is_causal=self.is_causal, mask=self.mask, dq=dq, dk=dk, dv=dv)
        return dqkv.reshape(B, L, 3 * H * D)                                             # (B, L, 3E)


def _packed_fusable(qkv, num_heads, attn_mask, dropout_p):
    """True when PackedSelfAttention computes exactly what packed_self_attention_composed would."""
    if dropout_p > 0 or qkv.dtype.name not in _FLOATS or 0 in qkv.shape:
        return False
    B, L, _ = qkv.shape
    return _constant_mask_fits(attn_mask, (B, num_heads, L, L))


def _check_packed(qkv, num_heads, attn_mask, is_causal):
    if qkv.ndim != 3 or qkv.shape[-1] % (3 * num_heads):
        raise ValueError(f"packed_self_attention: expected qkv (B, L, 3 E) with E divisible by num_heads = "
                         f"{num_heads}, got {qkv.shape}")
    if is_causal and attn_mask is not None:
        raise ValueError("packed_self_attention: pass either attn_mask or is_causal=True, not both")


def packed_self_attention_composed(qkv, num_heads, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """packed_self_attention with the heads split and merged by chunk, reshape and transpose around
    scaled_dot_product_attention: the oracle and the fallback of PackedSelfAttention."""
    qkv = as_tensor(qkv)
    _check_packed(qkv, num_heads, attn_mask, is_causal)
    B, L, E3 = qkv.shape
    H, D = num_heads, E3 // (3 * num_heads)
    q, k, v = (t.reshape(B, L, H, D).transpose(1, 2) for t in qkv.chunk(3, dim=-1))      # (B, H, L, D)
    out = scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                                       scale=scale)                                       # (B, H, L, D)
    return out.transpose(1, 2).reshape(B, L, H * D)                                      # (B, L, E): a copy


def packed_self_attention(qkv, num_heads, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """Multi-head self-attention over one packed projection qkv = [q | k | v] (B, L, 3E): the
    num_heads heads' outputs concatenated, (B, L, E). attn_mask (broadcastable to (B, H, L, L)),
    dropout_p, is_causal and scale (default 1 / sqrt(D)) as in scaled_dot_product_attention.
    PackedSelfAttention where it applies, else packed_self_attention_composed (module docstring)."""
    qkv = as_tensor(qkv)
    _check_packed(qkv, num_heads, attn_mask, is_causal)
    if not _packed_fusable(qkv, num_heads, attn_mask, dropout_p):
        return packed_self_attention_composed(qkv, num_heads, attn_mask, dropout_p, is_causal, scale)
    scale = 1 / math.sqrt(qkv.shape[-1] // (3 * num_heads)) if scale is None else scale
    return PackedSelfAttention.apply(qkv, num_heads=num_heads, scale=scale, is_causal=is_causal,
                                     mask=_mask_array(attn_mask, qkv.device))
