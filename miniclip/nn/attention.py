"""Multi-head attention with torch.nn.MultiheadAttention's parameters, keys and conventions.

For queries x_q (L tokens), keys and values x_k, x_v (S tokens), each of the H heads h gets a
slice of width D = E / H of the projections, attends, and the heads are concatenated:

    q, k, v   = x_q W_q^T + b_q,  x_k W_k^T + b_k,  x_v W_v^T + b_v     W_q, W_k, W_v: rows of in_proj_weight
    head_h    = softmax(q_h k_h^T / sqrt(D) + mask) v_h                  (L, D)
    output    = concat(head_1 .. head_H) W_o^T + b_o                     out_proj

The masks follow torch's MultiheadAttention (which differ from scaled_dot_product_attention's):
a boolean attn_mask is True where attention is NOT allowed; a float one is added to the scores.
is_causal=True lets token t attend to tokens 0..t only; unlike torch it needs no attn_mask (a
mask given with it is taken to be the causal one, as torch's "hint" does, and not used).

Three paths compute the same heads:
- self-attention (query is key is value) projects q, k, v with one (E, 3E) GEMM into
  qkv (B, L, 3E) and hands it to packed_self_attention (functional/attention.py): the flash
  kernel reads the heads as views of qkv and writes them side by side, (B, L, E), straight into
  out_proj's input, with dqkv written whole in the backward: no split, concatenation or copy of
  the heads' layout (torch's fused MHA fast path does the same);
- cross-attention projects q, k, v separately and calls F.scaled_dot_product_attention (a fused
  kernel where one exists) on (B, H, T, D) views; the heads are then merged by a copy;
- need_weights=True writes the softmax out, because only it can return the attention weights.
Dropout, in training, drops attention weights.

Checked against torch.nn.MultiheadAttention with the same weights (batch_first both ways, causal
and float/boolean masks, every path, parameter gradients) in tests/nn/test_attention.py.
"""
import numpy as np

from miniclip import backend
from miniclip import functional as F
from miniclip.functional.attention import packed_self_attention
from miniclip.nn import init
from miniclip.nn.layers import Linear
from miniclip.nn.module import Module, Parameter
from miniclip.tensor import Tensor


class MultiheadAttention(Module):
    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, batch_first=False):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.dropout, self.batch_first = dropout, batch_first
        E = embed_dim
        self.in_proj_weight = Parameter(init.xavier_uniform((3 * E, E), fan_in=E, fan_out=3 * E))
        self.in_proj_bias = Parameter(np.zeros(3 * E, np.float32)) if bias else None
        self.out_proj = Linear(E, E, bias=bias)
        if bias:
            self.out_proj.bias.data[...] = 0                 # torch zeroes both biases

    def forward(self, query, key, value, need_weights=False, attn_mask=None, is_causal=False):
        """Returns (output, weights): weights (B, L, S), averaged over the heads, only when
        need_weights=True, else None. Inputs are (L, B, E), or (B, L, E) with batch_first."""
        if query.ndim != 3:
            raise ValueError(f"MultiheadAttention expects batched 3-D inputs, got query of shape {query.shape}")
        self_attention = query is key and key is value
        if not self.batch_first:
            query = query.transpose(0, 1)
            key, value = (query, query) if self_attention else (key.transpose(0, 1), value.transpose(0, 1))
        B, L, E = query.shape
        S, H, D = key.shape[1], self.num_heads, self.head_dim
        dropout = self.dropout if self.training else 0.0
        weights = None

        if self_attention:
            # Self-attention: the three projections as one (B L, E) @ (E, 3E) product, one bias
            # add and, in the backward, one dW: fewer, larger GEMMs run closer to BLAS's peak.
            qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)        # (B, L, 3E)
            mask = None if is_causal else self._additive_mask(attn_mask, qkv, B, L, S)
            if not need_weights:
                out = packed_self_attention(qkv, H, attn_mask=mask, dropout_p=dropout,
                                            is_causal=is_causal)               # (B, L, E), heads side by side
                return self._project_out(out)
            q, k, v = (t.reshape(B, L, H, D).transpose(1, 2) for t in qkv.chunk(3, dim=-1))   # (B, H, L, D)
        else:
            w_q, w_k, w_v = self.in_proj_weight.chunk(3)
            b_q, b_k, b_v = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None,) * 3
            q = F.linear(query, w_q, b_q).reshape(B, L, H, D).transpose(1, 2)    # (B, H, L, D)
            k = F.linear(key, w_k, b_k).reshape(B, S, H, D).transpose(1, 2)      # (B, H, S, D)
            v = F.linear(value, w_v, b_v).reshape(B, S, H, D).transpose(1, 2)    # (B, H, S, D)
            mask = None if is_causal else self._additive_mask(attn_mask, q, B, L, S)

        if need_weights:
            out, weights = self._explicit_attention(q, k, v, mask, is_causal, dropout)
            weights = weights.mean(dim=1)                                      # (B, L, S)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                                 is_causal=is_causal)          # (B, H, L, D)
        return self._project_out(out.transpose(1, 2).reshape(B, L, E), weights)   # the heads merged by a copy

    def _project_out(self, out, weights=None):
        """out_proj of the concatenated heads (B, L, E); back to (L, B, E) unless batch_first."""
        out = self.out_proj(out)                                               # (B, L, E)
        if not self.batch_first:
            out = out.transpose(0, 1)                                         # (L, B, E)
        return out, weights

    def _additive_mask(self, attn_mask, like, B, L, S):
        """torch's attn_mask as a float mask added to the scores, on `like`'s device and in its
        dtype: (L, S) or (B, H, L, S)."""
        if attn_mask is None:
            return None
        mask = attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask
        mask = backend.to_device(mask, like.device)
        xp = backend.get_array_module(mask)
        if mask.dtype == bool:
            mask = xp.where(mask, -np.inf, 0.0)                  # True = not allowed
        mask = mask.astype(like.dtype)
        if mask.ndim == 3:                                       # torch's (B * H, L, S) layout
            mask = mask.reshape(B, self.num_heads, L, S)
        return Tensor(mask)

    def _explicit_attention(self, q, k, v, mask, is_causal, dropout):
        """softmax(q k^T / sqrt(D) + mask) v with the weights written out: ((B, H, L, D), (B, H, L, S))."""
        scores = q @ k.transpose(-2, -1) / np.sqrt(self.head_dim)               # (B, H, L, S)
        if is_causal:
            L, S = scores.shape[-2:]
            mask = Tensor(backend.to_device(np.triu(np.full((L, S), -np.inf, scores.dtype), 1), q.device))
        if mask is not None:
            scores = scores + mask
        weights = F.softmax(scores, dim=-1)
        if dropout > 0:
            weights = F.dropout(weights, dropout, training=True)
        return weights @ v, weights

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"
