"""The basic layers against torch.nn with the same weights (float64 outputs and gradients), their
default initialisation, Dropout's train/eval behaviour, and a gradcheck of a small Sequential."""
import numpy as np
import pytest

import miniclip
from miniclip import nn
from tests.helpers import standard_normal
from tests.nn.torch_compare import compare_with_torch
from tests.tolerances import GRADCHECK


@pytest.mark.oracle
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(torch, bias):
    compare_with_torch(torch, nn.Linear(7, 5, bias=bias), torch.nn.Linear(7, 5, bias=bias), [standard_normal(2, 3, 7)])


@pytest.mark.oracle
@pytest.mark.parametrize("shape, eps", [(7, 1e-5), ((3, 7), 1e-6)], ids=["last_dim", "last_two_dims"])
def test_layer_norm_matches_torch(torch, shape, eps):
    ours, theirs = nn.LayerNorm(shape, eps=eps), torch.nn.LayerNorm(shape, eps=eps)
    rng = np.random.default_rng(1)
    ours.weight.data[...] = rng.uniform(0.5, 1.5, ours.weight.shape)      # not the trivial 1 and 0
    ours.bias.data[...] = rng.standard_normal(ours.bias.shape)
    compare_with_torch(torch, ours, theirs, [3 * standard_normal(2, 3, 7) + 1])


@pytest.mark.oracle
def test_embedding_matches_torch(torch):
    ids = np.array([[0, 3, 3, 10], [1, 3, 0, 0]])        # repeated ids: their gradients add up
    compare_with_torch(torch, nn.Embedding(11, 5), torch.nn.Embedding(11, 5), [ids])


@pytest.mark.oracle
@pytest.mark.parametrize("ours, theirs", [
    (lambda: nn.GELU(), lambda t: t.nn.GELU()),
    (lambda: nn.GELU(approximate="tanh"), lambda t: t.nn.GELU(approximate="tanh")),
    (lambda: nn.ReLU(), lambda t: t.nn.ReLU()),
    (lambda: nn.Identity(), lambda t: t.nn.Identity()),
], ids=["gelu", "gelu_tanh", "relu", "identity"])
def test_activations_match_torch(torch, ours, theirs):
    x = standard_normal(3, 5, 4)
    x[np.abs(x) < 0.05] = 0.5                                 # away from relu's kink at 0
    compare_with_torch(torch, ours(), theirs(torch), [x])


@pytest.mark.oracle
def test_quick_gelu_matches_its_formula_in_torch(torch):
    class TorchQuickGELU(torch.nn.Module):                   # torch has none; OpenCLIP's definition
        def forward(self, x):
            return x * torch.sigmoid(1.702 * x)

    compare_with_torch(torch, nn.QuickGELU(), TorchQuickGELU(), [standard_normal(4, 6)])


def test_default_initialisation_follows_torch():
    miniclip.manual_seed(0)
    linear = nn.Linear(400, 300)
    bound = 1 / np.sqrt(400)
    for p in (linear.weight, linear.bias):
        assert p.dtype == np.float32
        assert np.abs(p.data).max() <= bound and np.abs(p.data).max() > 0.95 * bound
    assert linear.weight.data.std() == pytest.approx(bound / np.sqrt(3), rel=0.02)   # U(-b, b)
    embedding = nn.Embedding(300, 400)
    assert embedding.weight.data.std() == pytest.approx(1.0, rel=0.02)
    assert embedding.weight.data.mean() == pytest.approx(0.0, abs=0.01)
    norm = nn.LayerNorm(5)
    assert (norm.weight.data == 1).all() and (norm.bias.data == 0).all()


def test_dropout_scales_survivors_in_training_and_is_the_identity_in_eval():
    miniclip.manual_seed(0)
    dropout = nn.Dropout(0.25)
    x = miniclip.tensor(np.full((200, 100), 2.0, np.float32))
    y = dropout(x).data
    assert set(np.unique(y)) == {0.0, np.float32(2.0 / 0.75)}
    assert (y == 0).mean() == pytest.approx(0.25, abs=0.01)
    dropout.eval()
    np.testing.assert_array_equal(dropout(x).data, x.data)
    with pytest.raises(ValueError, match="\\[0, 1\\)"):
        nn.Dropout(1.0)


def test_gradcheck_small_sequential():
    miniclip.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.LayerNorm(6), nn.Linear(6, 3), nn.QuickGELU()).double()
    x = miniclip.tensor(standard_normal(5, 4), requires_grad=True)
    names, params = zip(*model.named_parameters())
    assert miniclip.gradcheck(lambda x, *params: model(x), [x, *params], names=["x", *names], **GRADCHECK)
