"""CLIP: an image tower and a text tower mapped into one embedding space (Radford et al. 2021).

    image_features = normalize(visual(image))                                  (B, embed_dim)
    text_features  = normalize(ln_final(transformer(embed(text)))[EOT] @ text_projection)
    logits_per_image = exp(logit_scale) * image_features @ text_features.T      (B, B)

The text tower lives at the top level of the model, as in openai/CLIP and OpenCLIP's `CLIP`
class, so the state_dict keys are theirs: token_embedding.weight, positional_embedding,
transformer.resblocks.N.*, ln_final.*, text_projection, logit_scale (and logit_bias for
SigLIP), with the image tower under visual.*. The text Transformer is causal and pooled at the
end-of-text token, found as the argmax of the token ids (EOT, 49407, is the largest id).
Nothing after a caption's EOT can reach its EOT (causal attention), so encode_text runs the
tower on the batch's tokens up to its longest caption only, and its last block on the EOT token
only (models/transformer.py): OpenCLIP computes every position of the context.

Checked against open_clip.create_model(...) with the same weights in tests/models.
"""
import numpy as np

from miniclip import backend
from miniclip import functional as F
from miniclip import nn
from miniclip.creation import get_rng
from miniclip.models.modified_resnet import ModifiedResNet
from miniclip.models.transformer import Transformer
from miniclip.models.vit import VisionTransformer
from miniclip.tensor import Tensor


class CLIP(nn.Module):
    def __init__(self, embed_dim, vision_cfg, text_cfg, quick_gelu=False,
                 init_logit_scale=float(np.log(1 / 0.07)), init_logit_bias=None):
        super().__init__()
        act_layer = nn.QuickGELU if quick_gelu else nn.GELU   # OpenAI's weights need QuickGELU
        self.quick_gelu = quick_gelu
        if isinstance(vision_cfg["layers"], (list, tuple)):
            self.visual = ModifiedResNet(
                layers=vision_cfg["layers"], output_dim=embed_dim,
                heads=vision_cfg["width"] * 32 // vision_cfg["head_width"],
                image_size=vision_cfg["image_size"], width=vision_cfg["width"])
        else:
            self.visual = VisionTransformer(
                image_size=vision_cfg["image_size"], patch_size=vision_cfg["patch_size"],
                width=vision_cfg["width"], layers=vision_cfg["layers"],
                heads=vision_cfg["width"] // vision_cfg["head_width"], output_dim=embed_dim,
                mlp_ratio=vision_cfg["mlp_ratio"], act_layer=act_layer)

        width = text_cfg["width"]
        self.context_length = text_cfg["context_length"]
        self.vocab_size = text_cfg["vocab_size"]
        self.token_embedding = nn.Embedding(self.vocab_size, width)
        self.positional_embedding = nn.Parameter(np.zeros((self.context_length, width), np.float32))
        self.transformer = Transformer(width, text_cfg["layers"], text_cfg["heads"],
                                       text_cfg["mlp_ratio"], act_layer)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(np.zeros((width, embed_dim), np.float32))
        self.logit_scale = nn.Parameter(np.array(init_logit_scale, np.float32))
        if init_logit_bias is not None:
            self.logit_bias = nn.Parameter(np.array(init_logit_bias, np.float32))
        else:
            self.logit_bias = None
        self.init_text_parameters()

    def init_text_parameters(self):
        """OpenCLIP's TextTransformer.init_parameters: normal inits scaled by width and depth."""
        rng = get_rng()
        width, layers = self.transformer.width, self.transformer.layers
        proj_std = width ** -0.5 * (2 * layers) ** -0.5
        attn_std = width ** -0.5
        fc_std = (2 * width) ** -0.5

        def normal(param, std):
            param.data[...] = rng.normal(0.0, std, param.shape)
        normal(self.token_embedding.weight, 0.02)
        normal(self.positional_embedding, 0.01)
        for block in self.transformer.resblocks:
            normal(block.attn.in_proj_weight, attn_std)
            normal(block.attn.out_proj.weight, proj_std)
            normal(block.mlp.c_fc.weight, fc_std)
            normal(block.mlp.c_proj.weight, proj_std)
        normal(self.text_projection, width ** -0.5)

    def encode_image(self, image, normalize=False):
        features = self.visual(_as_tensor(image))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text, normalize=False):
        """text: (B, context) token ids, a NumPy or CuPy array (or Tensor), on either device: the
        ids are checked, cut at the batch's longest caption and moved to the model's device."""
        ids, T = self.check_tokens(text)                                # (B, context) on the host, T
        # Tokens after the batch's last EOT are padding that no read token attends to (the
        # attention is causal): dropping them changes no output and saves their work.
        ids = ids[:, :T]                                                # (B, T)
        device = backend.device_of(self.token_embedding.weight.data)
        eot = backend.to_device(ids.data.argmax(axis=-1), device)       # (B,) position of EOT
        x = self.token_embedding(ids) + self.positional_embedding[:T]   # (B, T, width)
        x = self.transformer(x, is_causal=True, keep_token=eot)         # (B, width): EOT's output only
        x = self.ln_final(x)
        x = x @ self.text_projection                                    # (B, embed_dim)
        return F.normalize(x, dim=-1) if normalize else x

    def set_grad_checkpointing(self, enable=True):
        """Recompute every transformer block in backward (OpenCLIP's method of the same name):
        the text tower's and a ViT's; a ModifiedResNet has no transformer blocks to recompute."""
        self.transformer.grad_checkpointing = enable
        if isinstance(self.visual, VisionTransformer):
            self.visual.transformer.grad_checkpointing = enable

    def forward(self, image=None, text=None):
        """OpenCLIP's CLIP.forward: normalised features and exp(logit_scale) (+ logit_bias)."""
        image_features = self.encode_image(image, normalize=True) if image is not None else None
        text_features = self.encode_text(text, normalize=True) if text is not None else None
        if self.logit_bias is not None:
            return image_features, text_features, self.logit_scale.exp(), self.logit_bias
        return image_features, text_features, self.logit_scale.exp()

    def check_tokens(self, text):
        """(ids, T): the token ids as an integer tensor on the host, refusing ids outside the
        vocabulary or too many tokens, and T, the length up to the batch's last end-of-text token
        (the largest id). Ids on a GPU are copied to the host once (B x context small integers): the
        checks and T need their values there, and the embedding copies them back to its device."""
        ids = text.data if isinstance(text, Tensor) else text
        ids = Tensor(backend.to_numpy(ids) if backend.is_cupy_array(ids) else np.asarray(ids))
        if ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise ValueError(f"text must be a (batch, tokens) array of integer token ids, got "
                             f"shape {tuple(ids.shape)} and dtype {ids.dtype}")
        if ids.shape[1] > self.context_length:
            raise ValueError(f"text has {ids.shape[1]} tokens per row, more than this model's "
                             f"context length {self.context_length}; tokenize with "
                             f"context_length={self.context_length}")
        low, high = int(ids.data.min()), int(ids.data.max())
        if low < 0 or high >= self.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}) for this model's "
                             f"vocabulary, got ids from {low} to {high}")
        return ids, int(ids.data.argmax(axis=-1).max()) + 1


def _as_tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)
