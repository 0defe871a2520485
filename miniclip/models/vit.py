"""The Vision Transformer image tower (Dosovitskiy et al. 2020, as used by CLIP).

    image (B, 3, H, W)
      -> conv1: patchify, kernel = stride = patch_size, no bias   (B, width, grid, grid)
      -> flatten the grid into a sequence of grid^2 patch tokens  (B, grid^2, width)
      -> prepend class_embedding as token 0, add positional_embedding
      -> ln_pre -> Transformer -> ln_post on token 0 -> @ proj     (B, embed_dim)
         (the last block computes token 0 only: models/transformer.py says why)

Parameter names and shapes are OpenCLIP's (`visual.conv1.weight`, `visual.class_embedding`,
`visual.positional_embedding`, `visual.ln_pre`, `visual.transformer.resblocks.N.*`,
`visual.ln_post`, `visual.proj`). Initialisation as OpenCLIP: the embeddings and proj are
width^-0.5 * N(0, 1); the blocks keep the layers' default init.
"""
import numpy as np

from miniclip import nn, ops
from miniclip.backend import get_array_module
from miniclip.creation import randn
from miniclip.models.transformer import Transformer


class VisionTransformer(nn.Module):
    def __init__(self, image_size, patch_size, width, layers, heads, output_dim, mlp_ratio=4.0,
                 act_layer=nn.GELU):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.image_size, self.patch_size = image_size, patch_size
        grid = image_size // patch_size
        scale = width ** -0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * randn(width))
        self.positional_embedding = nn.Parameter(scale * randn(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, mlp_ratio, act_layer)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * randn(width, output_dim))

    def forward(self, image):
        check_image(image, self.image_size)
        x = self.conv1(image)                                          # (B, width, grid, grid)
        B, width = x.shape[:2]
        xp = get_array_module(x.data)
        x = x.reshape(B, width, -1).transpose(1, 2)                    # (B, grid^2, width)
        cls = ops.expand(self.class_embedding.reshape(1, 1, width), (B, 1, width))
        x = ops.concat([cls, x], dim=1)                                # (B, grid^2 + 1, width)
        x = x + self.positional_embedding
        class_token = xp.zeros(B, dtype=np.int64)                      # position 0 of every image
        x = self.transformer(self.ln_pre(x), keep_token=class_token)  # (B, width): the class token's output
        pooled = self.ln_post(x)
        return pooled @ self.proj                                      # (B, embed_dim)


def check_image(image, image_size):
    """Refuse images of the wrong shape with a message that names the expected one."""
    expected = ("B", 3, image_size, image_size)
    if image.ndim != 4 or tuple(image.shape[1:]) != expected[1:]:
        raise ValueError(f"image batch of shape {tuple(image.shape)}: this model expects "
                         f"(batch, 3, {image_size}, {image_size}) float images (CLIP-normalised); "
                         "resize them with miniclip.data's transforms")
    if image.dtype.kind != "f":
        raise TypeError(f"images must be floating point (normalised), got {image.dtype}")

