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

Checked by tests/functional/test_attention.py: float64 gradcheck of both paths (T = 1, T = 7,
causal, a boolean mask leaving one key, an additive mask), the fused against the composed path
in both kernel modes, and torch.nn.functional.scaled_dot_product_attention on the same inputs,
values and gradients of Q, K and V.
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


def _fusable(query, key, value, attn_mask, dropout_p):
    """True when the flash kernel computes exactly what the composed path would (see the docstring)."""
    floats = ("float32", "float64")
    if dropout_p > 0 or not 2 <= query.ndim <= 4 or query.dtype.name not in floats or 0 in query.shape:
        return False
    if not (query.dtype == key.dtype == value.dtype) or value.shape != key.shape or 0 in key.shape:
        return False
    if key.shape[-1] != query.shape[-1]:
        return False
    if query.shape[:-2] != key.shape[:-2]:
        return False
    if attn_mask is None:
        return True
    if attn_mask.dtype.kind != "f" or getattr(attn_mask, "requires_grad", False):
        return False
    scores_shape = query.shape[:-1] + (key.shape[-2],)                       # (..., L, S)
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
    mask = attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask
    if mask is not None:
        mask = to_device(mask, query.device)
    return FusedAttention.apply(query, key, value, scale=scale, is_causal=is_causal, mask=mask)
