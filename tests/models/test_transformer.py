"""Transformer(x, keep_token=...) computes the last block for one token per sequence: its output
and every gradient must equal those of the full computation with that token picked afterwards
(float64, causal and not), and its backward passes a gradcheck. CLIP.encode_text, which also
leaves out the padding after the batch's longest caption, equals the text tower computed over
the whole context."""
import numpy as np
import pytest

from miniclip import nn
from miniclip.models import create_model
from miniclip.gradcheck import gradcheck
from miniclip.models.transformer import Transformer
from miniclip.tensor import Tensor
from tests.tolerances import GRADCHECK


def small_transformer(layers=2, seed=0):
    model = Transformer(width=6, layers=layers, heads=2, act_layer=nn.GELU).double()
    rng = np.random.default_rng(seed)
    for p in model.parameters():           # biases and gains away from their trivial 0 and 1
        p.data[...] = rng.normal(0.0, 0.5, p.shape)
    return model


def output_and_gradients(model, x, run):
    model.zero_grad()
    x = Tensor(x.copy(), requires_grad=True)
    y = run(model, x)
    y.backward(grad=np.random.default_rng(2).standard_normal(y.shape))
    return y.numpy(), x.grad, {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("is_causal", [False, True], ids=["bidirectional", "causal"])
@pytest.mark.parametrize("layers", [1, 3])
def test_keep_token_equals_picking_the_token_from_every_output(is_causal, layers):
    model = small_transformer(layers)
    x = np.random.default_rng(1).standard_normal((4, 5, 6))         # (B, T, width)
    keep = np.array([0, 4, 2, 4])                                    # first, last and middle tokens
    rows = np.arange(4)
    picked = output_and_gradients(model, x, lambda m, x: m(x, is_causal=is_causal)[rows, keep])
    kept = output_and_gradients(model, x, lambda m, x: m(x, is_causal=is_causal, keep_token=keep))
    np.testing.assert_allclose(kept[0], picked[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(kept[1], picked[1], rtol=1e-10, atol=1e-12)
    for name, grad in picked[2].items():
        np.testing.assert_allclose(kept[2][name], grad, rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("is_causal", [False, True], ids=["bidirectional", "causal"])
def test_keep_token_gradcheck(is_causal):
    model = small_transformer(layers=1, seed=3)
    x = Tensor(np.random.default_rng(4).standard_normal((2, 3, 6)), requires_grad=True)
    keep = np.array([1, 2])
    assert gradcheck(lambda x: model(x, is_causal=is_causal, keep_token=keep), [x], **GRADCHECK)


def test_encode_text_equals_the_tower_over_the_whole_context():
    config = {"embed_dim": 8, "vision_cfg": {"image_size": 8, "layers": 1, "width": 8, "head_width": 4, "patch_size": 4},
              "text_cfg": {"context_length": 9, "vocab_size": 50, "width": 8, "heads": 2, "layers": 2}}
    model = create_model(config).double()
    rng = np.random.default_rng(5)
    for p in model.parameters():
        p.data[...] = rng.normal(0.0, 0.5, p.shape)
    ids = np.zeros((3, 9), np.int64)                         # EOT (49) at 2, 5 and 3: 3 padding columns
    for row, eot in zip(ids, [2, 5, 3]):
        row[:eot] = rng.integers(1, 48, eot)
        row[eot] = 49

    def whole_context(model, ids):
        x = model.token_embedding(ids) + model.positional_embedding
        x = model.ln_final(model.transformer(x, is_causal=True))[np.arange(3), ids.data.argmax(axis=-1)]
        return x @ model.text_projection

    def features_and_gradients(encode):
        model.zero_grad()
        features = encode(ids)
        features.backward(grad=np.ones(features.shape))
        return features.numpy(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    ours = features_and_gradients(model.encode_text)
    expected = features_and_gradients(lambda ids: whole_context(model, Tensor(ids)))
    np.testing.assert_allclose(ours[0], expected[0], rtol=1e-12, atol=1e-12)
    assert ours[1].keys() == expected[1].keys()
    for name, grad in expected[1].items():
        np.testing.assert_allclose(ours[1][name], grad, rtol=1e-10, atol=1e-12, err_msg=name)
