"""The pre-LayerNorm residual Transformer that both CLIP towers share.

Each block (`ResidualAttentionBlock`) is, as in openai/CLIP and OpenCLIP:

    x = x + attn(ln_1(x))                 multi-head self-attention (causal in the text tower)
    x = x + mlp(ln_2(x))                  c_fc (width -> 4 width) -> GELU or QuickGELU -> c_proj

with the attention as torch's nn.MultiheadAttention (one fused in_proj for q, k, v), so the
parameter names are those of OpenCLIP checkpoints: `resblocks.N.ln_1.weight`,
`resblocks.N.attn.in_proj_weight`, `resblocks.N.mlp.c_fc.weight`, ...

CLIP reads one token per sequence from the last block (the class token of the image, the
end-of-text token of the text), so `Transformer(x, keep_token=index)` computes the last block
for that token only: its query still attends to the keys and values of every token, but the
other tokens' queries, attention outputs, out_proj and MLP rows, which nothing reads, are never
computed. The output is the same as computing every row and picking one (each row of
attention, LayerNorm and the MLP depends on its own query row only). On tiny-vit-s this leaves
out ~5/6 of the last block's work: ~14% of the image tower's and ~20% of the text tower's
FLOPs. OpenCLIP computes every row.

Checked against OpenCLIP's own blocks with the same weights in tests/models.
"""
from miniclip import functional as F
from miniclip import nn
from miniclip.backend import get_array_module
from miniclip.nn.checkpoint import checkpoint


class MLP(nn.Module):
    """c_fc -> activation -> c_proj. The activation has no parameters, so it adds no keys.

    With GELU or QuickGELU it runs as one F.mlp, which keeps c_fc's output but not the
    activation's, recomputing it in the backward (functional/mlp.py: ~0.5 GB less on a batch-256
    tiny-vit-s step)."""

    def __init__(self, width, hidden, act_layer):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = act_layer()
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x):
        activation = self._fused_activation()
        if activation is None:
            return self.c_proj(self.gelu(self.c_fc(x)))
        return F.mlp(x, self.c_fc.weight, self.c_fc.bias, self.c_proj.weight, self.c_proj.bias, activation)

    def _fused_activation(self):
        """F.mlp's name of the activation, or None when F.mlp has none for it."""
        if isinstance(self.gelu, nn.QuickGELU):
            return "quick_gelu"
        if isinstance(self.gelu, nn.GELU) and self.gelu.approximate == "none":
            return "gelu"
        return None


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width, heads, mlp_ratio=4.0, act_layer=nn.GELU):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width, int(width * mlp_ratio), act_layer)

    def forward(self, x, is_causal=False, keep_token=None):  # x: (B, T, width)
        """keep_token: None, or the position (B,) of the one token per sequence whose output is
        wanted; then only that row is computed and returned, (B, width) (module docstring)."""
        h = self.ln_1(x)
        if keep_token is None:
            x = x + self.attn(h, h, h, need_weights=False, is_causal=is_causal)[0]
            return x + self.mlp(self.ln_2(x))
        rows = get_array_module(keep_token).arange(len(keep_token))
        mask = self._keys_up_to(keep_token, x.shape[1]) if is_causal else None
        x = x[rows, keep_token][:, None]                                   # (B, 1, width)
        x = x + self.attn(h[rows, keep_token][:, None], h, h, need_weights=False, attn_mask=mask)[0]
        return (x + self.mlp(self.ln_2(x)))[:, 0]                          # (B, width)

    def _keys_up_to(self, position, T):
        """The causal mask of one query per sequence at `position` (B,): True (not allowed) on
        the keys after it, in torch's (B * heads, 1, T) layout."""
        xp = get_array_module(position)
        future = xp.arange(T)[None, :] > position[:, None]                 # (B, T)
        return xp.repeat(future, self.attn.num_heads, axis=0)[:, None]     # (B * heads, 1, T)


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, mlp_ratio=4.0, act_layer=nn.GELU):
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, mlp_ratio, act_layer) for _ in range(layers)])
        self.grad_checkpointing = False   # OpenCLIP's name: recompute each block in backward

    def forward(self, x, is_causal=False, keep_token=None):
        """is_causal: token t attends to tokens 0..t only (OpenCLIP's -inf-above-the-diagonal
        attn_mask, which is not in the state_dict). keep_token: None for every token's output
        (B, T, width), or the position (B,) of the one token per sequence to return, (B, width),
        which the last block then computes alone (module docstring). With grad_checkpointing each
        block keeps only its input for the backward (miniclip/nn/checkpoint.py)."""
        *blocks, last = self.resblocks
        for block in blocks:
            x = checkpoint(block, x, is_causal=is_causal) if self.grad_checkpointing else block(x, is_causal=is_causal)
        options = dict(is_causal=is_causal, keep_token=keep_token)
        return checkpoint(last, x, **options) if self.grad_checkpointing else last(x, **options)
