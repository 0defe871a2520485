"""Whole-model parity with OpenCLIP: the same weights give the same features and gradients.

Small configs of every tower (ViT, ModifiedResNet, the text Transformer, GELU and QuickGELU,
SigLIP's logit_bias) are built in open_clip with random init, their state_dicts are copied
into miniclip (which also proves the key names and shapes match exactly), and then:
  - features in float32 agree within tolerances.OPENCLIP_FEATURES;
  - in float64, the CLIP / SigLIP loss and its gradient for every parameter agree with
    torch.autograd through open_clip's ClipLoss / SigLipLoss.
"""
import numpy as np
import pytest

import miniclip
from miniclip.losses import clip_loss, siglip_loss
from tests.tolerances import OPENCLIP_FEATURES

pytestmark = pytest.mark.oracle

TEXT = dict(context_length=12, vocab_size=97, width=32, heads=2, layers=2)
CONFIGS = {
    "vit": dict(embed_dim=24, vision_cfg=dict(image_size=16, patch_size=4, width=32, layers=2, head_width=16),
                text_cfg=TEXT),
    "vit-quickgelu": dict(embed_dim=24, quick_gelu=True,
                          vision_cfg=dict(image_size=12, patch_size=6, width=32, layers=1, head_width=8),
                          text_cfg=TEXT),
    "rn": dict(embed_dim=16, vision_cfg=dict(image_size=64, layers=[1, 2, 1, 1], width=8, head_width=64),
               text_cfg=TEXT),
    "siglip": dict(embed_dim=24, init_logit_scale=float(np.log(10)), init_logit_bias=-10.0,
                   vision_cfg=dict(image_size=16, patch_size=8, width=32, layers=1, head_width=16),
                   text_cfg=TEXT),
}


def build_pair(torch, open_clip, config, seed=0):
    torch.manual_seed(seed)
    theirs = open_clip.model.CLIP(config["embed_dim"], config["vision_cfg"], config["text_cfg"],
                                  quick_gelu=config.get("quick_gelu", False),
                                  init_logit_scale=config.get("init_logit_scale", np.log(1 / 0.07)),
                                  init_logit_bias=config.get("init_logit_bias"))
    ours = miniclip.create_model(config)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def inputs(config, batch=3, seed=1):
    rng = np.random.default_rng(seed)
    size = config["vision_cfg"]["image_size"]
    images = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    ctx, vocab = config["text_cfg"]["context_length"], config["text_cfg"]["vocab_size"]
    tokens = np.zeros((batch, ctx), dtype=np.int64)
    for i in range(batch):
        length = rng.integers(1, ctx - 1)                       # SOT, words, EOT, then padding
        tokens[i, 0] = vocab - 2
        tokens[i, 1:length + 1] = rng.integers(1, vocab - 2, length)
        tokens[i, length + 1] = vocab - 1                       # EOT: the largest id
    return images, tokens


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_dict_keys_and_shapes_match(torch, open_clip, name):
    ours, theirs = build_pair(torch, open_clip, CONFIGS[name])
    expected = {k: tuple(v.shape) for k, v in theirs.state_dict().items() if k != "attn_mask"}
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert got == expected


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_features_match_in_float32(torch, open_clip, name):
    config = CONFIGS[name]
    ours, theirs = build_pair(torch, open_clip, config)
    ours.eval(), theirs.eval()
    images, tokens = inputs(config)
    with torch.no_grad():
        expected = theirs(torch.tensor(images), torch.tensor(tokens))
    got = ours(images, tokens)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.data, e.detach().numpy(), **OPENCLIP_FEATURES)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_loss_and_every_parameter_gradient_match_in_float64(torch, open_clip, name):
    config = CONFIGS[name]
    ours, theirs = build_pair(torch, open_clip, config)
    theirs = theirs.double()
    ours.double()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    ours.train(), theirs.train()                                 # BatchNorm uses batch statistics
    images, tokens = inputs(config, batch=4)
    siglip = "init_logit_bias" in config

    out = theirs(torch.tensor(images, dtype=torch.float64), torch.tensor(tokens))
    loss_fn = open_clip.loss.SigLipLoss() if siglip else open_clip.loss.ClipLoss()
    expected_loss = loss_fn(*out)
    expected_loss.backward()

    got = ours(images.astype(np.float64), tokens)
    loss = siglip_loss(*got) if siglip else clip_loss(*got)
    loss.backward()

    np.testing.assert_allclose(loss.item(), expected_loss.item(), rtol=1e-9)
    their_params = dict(theirs.named_parameters())
    for key, param in ours.named_parameters():
        np.testing.assert_allclose(param.grad, their_params[key].grad.numpy(), rtol=1e-7, atol=1e-10,
                                   err_msg=f"gradient of {key}")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_open_clip_loads_miniclips_weights_back(torch, open_clip, name):
    """The other direction: weights made by miniclip (its own init) load into open_clip, strictly."""
    config = CONFIGS[name]
    miniclip.manual_seed(3)
    ours = miniclip.create_model(config)
    _, theirs = build_pair(torch, open_clip, config)
    missing, unexpected = theirs.load_state_dict(
        {k: torch.from_numpy(np.array(v.data)) for k, v in ours.state_dict().items()}, strict=False)
    assert unexpected == [] and set(missing) <= {"attn_mask"}   # open_clip's causal mask is a buffer
    ours.eval(), theirs.eval()
    images, tokens = inputs(config)
    with torch.no_grad():
        expected = theirs(torch.tensor(images), torch.tensor(tokens))
    for g, e in zip(ours(images, tokens), expected):
        np.testing.assert_allclose(g.data, e.detach().numpy(), **OPENCLIP_FEATURES)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ViT-B-32", "RN50"])
def test_full_size_models_match_open_clip(torch, open_clip, name):
    """The real architectures, at 224 px and context 77: one forward gives open_clip's features."""
    torch.manual_seed(0)
    theirs = open_clip.create_model(name, pretrained=None).eval()
    ours = miniclip.create_model(name)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items() if k != "attn_mask"})
    ours.eval()
    config = miniclip.models.load_config(name)
    images, tokens = inputs(config, batch=2)
    with torch.no_grad():
        expected = theirs(torch.tensor(images), torch.tensor(tokens))
    for g, e in zip(ours(images, tokens), expected):
        np.testing.assert_allclose(g.data, e.detach().numpy(), **OPENCLIP_FEATURES)
