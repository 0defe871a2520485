"""The pre-LayerNorm residual Transformer that both CLIP towers share.

Each block (`ResidualAttentionBlock`) is, as in openai/CLIP and OpenCLIP:

    x = x + attn(ln_1(x))                 multi-head self-attention (causal in the text tower)
    x = x + mlp(ln_2(x))                  c_fc (width -> 4 width) -> GELU or QuickGELU -> c_proj

with the attention as torch's nn.MultiheadAttention (one fused in_proj for q, k, v), so the
parameter names are those of OpenCLIP checkpoints: `resblocks.N.ln_1.weight`,
`resblocks.N.attn.in_proj_weight`, `resblocks.N.mlp.c_fc.weight`, ...

Checked against OpenCLIP's own blocks with the same weights in tests/models.
"""
from miniclip import nn


class MLP(nn.Module):
    """c_fc -> activation -> c_proj. The activation has no parameters, so it adds no keys."""

    def __init__(self, width, hidden, act_layer):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = act_layer()
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width, heads, mlp_ratio=4.0, act_layer=nn.GELU):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width, int(width * mlp_ratio), act_layer)

    def forward(self, x, is_causal=False):                   # x: (B, T, width)
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, is_causal=is_causal)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, mlp_ratio=4.0, act_layer=nn.GELU):
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, mlp_ratio, act_layer) for _ in range(layers)])

    def forward(self, x, is_causal=False):
        """is_causal: token t attends to tokens 0..t only (OpenCLIP's -inf-above-the-diagonal
        attn_mask, which is not in the state_dict)."""
        for block in self.resblocks:
            x = block(x, is_causal=is_causal)
        return x
