"""Scaled dot-product attention (Vaswani et al. 2017), composed from matmul, where and softmax.

For queries Q (..., L, E), keys K (..., S, E) and values V (..., S, Ev):

    scores = Q @ K^T * scale                 (..., L, S)      scale = 1 / sqrt(E) by default
    scores = where(mask, scores, -inf)       a boolean mask: True = this query may attend to this key
      or   = scores + mask                   an additive float mask (0 keep, -inf or large negative drop)
    out    = softmax(scores, dim=-1) @ V     (..., L, Ev)

is_causal=True keeps key j for query i only when j <= i (the lower triangle of an (L, S) matrix,
as torch). A row whose keys are all masked has no defined softmax and gives NaN, as in torch.
Autograd derives the backward through the primitives and the hand-written softmax.

Checked by tests/functional/test_attention.py: float64 gradcheck (T = 1, T = 7, causal, a
boolean mask leaving one key, an additive mask) and torch.nn.functional.scaled_dot_product_attention
on the same inputs, values and gradients of Q, K and V.
"""
import math

from miniclip.backend import get_array_module, to_device
from miniclip.functional.activation import dropout, softmax
from miniclip.ops import matmul, transpose, where
from miniclip.tensor import Tensor, as_tensor


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


# The fused kernels (miniclip.kernels.attention) will take the public name behind the same
# signature; the composed version keeps its own name as their test oracle.
scaled_dot_product_attention = scaled_dot_product_attention_composed
