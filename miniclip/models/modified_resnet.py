"""OpenAI's modified ResNet image tower (the RN50 family of CLIP).

It differs from torchvision's ResNet in three ways (Radford et al. 2021, section 2.4):
  - the stem is 3 convolutions (3x3, the first with stride 2) with an average pool, not one
    7x7 convolution with a max pool;
  - striding is anti-aliased: a block that halves the resolution does it with an average
    pool *before* conv3 (and before the downsample's 1x1 conv), and its convolutions have stride 1;
  - the final global average pool is replaced by attention pooling (AttentionPool2d): the
    spatial mean is the one query, attending over the mean and every position.

Parameter names are OpenCLIP's: visual.conv1..3 / bn1..3, visual.layerN.M.{conv1..3, bn1..3,
downsample.0 (conv), downsample.1 (BN)}, visual.attnpool.{positional_embedding, q_proj, k_proj,
v_proj, c_proj}. Init as OpenCLIP: attnpool projections N(0, in^-0.5), every bn3 weight zero
(each residual branch starts as the identity).
"""
import numpy as np

from miniclip import functional as F
from miniclip import nn, ops
from miniclip.creation import get_rng
from miniclip.models.vit import check_image


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = Downsample(inplanes, planes * self.expansion, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        if self.stride > 1:
            out = F.avg_pool2d(out, self.stride)                      # anti-aliased striding
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class Downsample(nn.Module):
    """avg-pool(stride) -> 1x1 conv -> BN. OpenCLIP names these children "-1" (the pool, no
    parameters), "0" and "1", so the keys are downsample.0.weight and downsample.1.*."""

    def __init__(self, inplanes, outplanes, stride):
        super().__init__()
        self.stride = stride
        self.add_module("0", nn.Conv2d(inplanes, outplanes, 1, bias=False))
        self.add_module("1", nn.BatchNorm2d(outplanes))

    def forward(self, x):
        conv, bn = self._modules["0"], self._modules["1"]
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride)
        return bn(conv(x))


class AttentionPool2d(nn.Module):
    """Multi-head attention with one query, the mean of the feature map:

        tokens = [mean_hw(x); x_1 .. x_HW] + positional_embedding      (HW + 1, C)
        out    = c_proj(MultiHeadAttention(q = tokens[0], k = v = tokens))
    """

    def __init__(self, spatial_dim, embed_dim, num_heads, output_dim):
        super().__init__()
        rng = get_rng()
        self.positional_embedding = nn.Parameter(
            rng.standard_normal((spatial_dim ** 2 + 1, embed_dim)).astype(np.float32) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x):                                             # x: (B, C, H, W)
        B, C = x.shape[:2]
        H = self.num_heads
        x = x.reshape(B, C, -1).transpose(1, 2)                        # (B, HW, C)
        x = ops.concat([x.mean(dim=1, keepdim=True), x], dim=1)       # (B, HW + 1, C)
        x = x + self.positional_embedding
        q = self.q_proj(x[:, :1])                                      # (B, 1, C): the mean token only
        k, v = self.k_proj(x), self.v_proj(x)                          # (B, HW + 1, C)
        q, k, v = [t.reshape(B, t.shape[1], H, C // H).transpose(1, 2) for t in (q, k, v)]  # (B, H, T, C/H)
        out = F.scaled_dot_product_attention(q, k, v)                  # (B, H, 1, C/H)
        out = out.transpose(1, 2).reshape(B, C)                        # (B, C)
        return self.c_proj(out)                                        # (B, output_dim)


class ModifiedResNet(nn.Module):
    def __init__(self, layers, output_dim, heads, image_size=224, width=64):
        super().__init__()
        self.image_size = image_size
        # the 3-layer stem
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)

        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)

        embed_dim = width * 32                                         # the ResNet feature dimension
        self.attnpool = AttentionPool2d(image_size // 32, embed_dim, heads, output_dim)
        self.init_parameters()

    def _make_layer(self, planes, blocks, stride=1):
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def init_parameters(self):
        rng = get_rng()
        std = self.attnpool.c_proj.weight.shape[1] ** -0.5
        for proj in (self.attnpool.q_proj, self.attnpool.k_proj, self.attnpool.v_proj, self.attnpool.c_proj):
            proj.weight.data[...] = rng.normal(0, std, proj.weight.shape)
        for name, param in self.named_parameters():
            if name.endswith("bn3.weight") and name.startswith("layer"):
                param.data[...] = 0

    def forward(self, image):
        check_image(image, self.image_size)
        x = F.relu(self.bn1(self.conv1(image)))                        # (B, width/2, H/2, W/2)
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))                            # (B, width, H/2, W/2)
        x = F.avg_pool2d(x, 2)                                         # (B, width, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))     # (B, 32 width, H/32, W/32)
        return self.attnpool(x)                                        # (B, output_dim)
