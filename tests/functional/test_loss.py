"""cross_entropy: float64 gradcheck and torch on the same inputs for every reduction and label
smoothing, rows of +-1e4 against the closed form, the accepted target types, and clear errors."""
import math

import numpy as np
import pytest

import miniclip
from miniclip import functional as F
from tests.helpers import assert_matches_torch, make_inputs
from tests.tolerances import GRADCHECK

TARGET_5 = np.array([6, 0, 3, 3, 1])      # for logits (5, 7): a repeated class, the first and last


def scaled_normal(rng, shape):
    return 3 * rng.standard_normal(shape)


CASES = [
    # name, shape of the logits, target, keyword arguments
    ("mean", (5, 7), TARGET_5, {}),
    ("sum", (5, 7), TARGET_5, {"reduction": "sum"}),
    ("none", (5, 7), TARGET_5, {"reduction": "none"}),
    ("label_smoothing", (5, 7), TARGET_5, {"label_smoothing": 0.1}),
    ("label_smoothing_none", (5, 7), TARGET_5, {"label_smoothing": 0.3, "reduction": "none"}),
    ("one_row_three_classes", (1, 3), np.array([2]), {}),
    ("one_class", (3, 1), np.array([0, 0, 0]), {}),
]


@pytest.mark.parametrize("name, shape, target, kwargs", CASES, ids=[c[0] for c in CASES])
def test_gradcheck(name, shape, target, kwargs):
    logits = make_inputs([shape], scaled_normal)
    assert miniclip.gradcheck(lambda x: F.cross_entropy(x, target, **kwargs), logits, **GRADCHECK)


@pytest.mark.oracle
@pytest.mark.parametrize("name, shape, target, kwargs", CASES, ids=[c[0] for c in CASES])
def test_matches_torch(torch, name, shape, target, kwargs):
    assert_matches_torch(torch, lambda x: F.cross_entropy(x, target, **kwargs),
                         lambda t, x: t.nn.functional.cross_entropy(x, t.tensor(target), **kwargs),
                         make_inputs([shape], scaled_normal))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_of_1e4_do_not_overflow(dtype):
    # row 0, target 1:  -log p_1 = 1e4 - (-1e4) + log(1 + e^-1e4 + e^-2e4) = 2e4
    # row 1, target 2:  -log p_2 = 1 + log(1 + e^-1)     (the logit 1e4 - 1 against 1e4)
    logits = miniclip.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4 - 1]], dtype=dtype, requires_grad=True)
    loss = F.cross_entropy(logits, [1, 2], reduction="none")
    assert loss.dtype == dtype
    np.testing.assert_allclose(loss.data, [2e4, 1 + math.log1p(math.exp(-1))], rtol=1e-6)
    loss.backward(np.ones(2, dtype=dtype))
    s = 1 / (1 + math.exp(-1))                 # p of the logit 1e4 in row 1
    np.testing.assert_allclose(logits.grad, [[1, -1, 0], [0, s, (1 - s) - 1]], atol=1e-6)


@pytest.mark.parametrize("make_target", [list, np.array, miniclip.tensor],
                         ids=["list", "numpy", "tensor"])
def test_target_may_be_a_list_an_array_or_a_tensor(make_target):
    logits = make_inputs([(5, 7)])[0]
    expected = F.cross_entropy(logits, TARGET_5).item()
    assert F.cross_entropy(logits, make_target(TARGET_5.tolist())).item() == expected


BAD = [
    # logits shape, target, keyword arguments, words the message must contain
    ((5, 7), np.array([0, 1, 7, 2, 3]), {}, r"\[0, 7\) for logits \(5, 7\), got min 0, max 7"),
    ((5, 7), np.array([0, -1, 2, 2, 3]), {}, r"got min -1"),
    ((5, 7), np.array([0, 1, 2]), {}, r"shape \(5,\), got shape \(3,\)"),
    ((5, 7), np.array([0.0, 1, 2, 2, 3]), {}, r"integer class indices.*float64"),
    ((7,), np.array([1]), {}, r"logits of shape \(N, C\), got \(7,\)"),
    ((5, 7), TARGET_5, {"reduction": "max"}, r"'mean', 'sum' or 'none'"),
    ((5, 7), TARGET_5, {"label_smoothing": 1.5}, r"label_smoothing must lie in \[0, 1\]"),
]


@pytest.mark.parametrize("shape, target, kwargs, message", BAD)
def test_bad_input_gives_a_clear_error(shape, target, kwargs, message):
    with pytest.raises(ValueError, match=message):
        F.cross_entropy(make_inputs([shape])[0], target, **kwargs)
