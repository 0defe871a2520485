"""Transformer(x, keep_token=...) computes the last block for one token per sequence: its output
and every gradient must equal those of the full computation with that token picked afterwards
(float64, causal and not), and its backward passes a gradcheck."""
import numpy as np
import pytest

from miniclip import nn
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
