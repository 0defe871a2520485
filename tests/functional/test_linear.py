"""linear and embedding: float64 gradcheck, torch on the same inputs, and clear errors."""
import numpy as np
import pytest

import miniclip
from miniclip import functional as F
from tests.functional.helpers import assert_matches_torch, make_inputs, normal
from tests.tolerances import GRADCHECK

IDS = np.array([[4, 0, 4], [2, 2, 4]])     # repeated ids: their rows of the gradient must add up

CASES = [
    # name, miniclip fn, torch fn, input shapes, input maker
    ("linear", F.linear, lambda t, x, w, b: t.nn.functional.linear(x, w, b), [(3, 5), (7, 5), (7,)], normal),
    ("linear_batched_one_output_no_bias", F.linear, lambda t, x, w: t.nn.functional.linear(x, w),
     [(2, 3, 5), (1, 5)], normal),
    ("linear_vector_input", F.linear, lambda t, x, w, b: t.nn.functional.linear(x, w, b),
     [(5,), (3, 5), (3,)], normal),
    ("embedding_repeated_ids", lambda w: F.embedding(IDS, w),
     lambda t, w: t.nn.functional.embedding(t.tensor(IDS), w), [(5, 3)], normal),
]


@pytest.mark.parametrize("name, fn, torch_fn, shapes, maker", CASES, ids=[c[0] for c in CASES])
def test_gradcheck(name, fn, torch_fn, shapes, maker):
    assert miniclip.gradcheck(fn, make_inputs(shapes, maker), **GRADCHECK)


@pytest.mark.oracle
@pytest.mark.parametrize("name, fn, torch_fn, shapes, maker", CASES, ids=[c[0] for c in CASES])
def test_matches_torch(torch, name, fn, torch_fn, shapes, maker):
    assert_matches_torch(torch, fn, torch_fn, make_inputs(shapes, maker))


def test_embedding_accepts_a_tensor_of_ids():
    weight = make_inputs([(5, 3)])[0]
    np.testing.assert_array_equal(F.embedding(miniclip.tensor(IDS), weight).data, weight.data[IDS])


BAD = [
    # call, error type, words the message must contain
    (lambda w: F.linear(make_inputs([(3, 4)])[0], w), ValueError,
     r"input of shape \(3, 4\) has 4 features, but weight of shape \(5, 3\) must be \(out_features, 4\)"),
    (lambda w: F.embedding(np.array([0, 5]), w), IndexError, r"\[0, 5\) for weight of shape \(5, 3\), got min 0, max 5"),
    (lambda w: F.embedding(np.array([0.0, 1.0]), w), TypeError, r"ids must be integers, got dtype float64"),
]


@pytest.mark.parametrize("call, error, message", BAD)
def test_bad_input_gives_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call(make_inputs([(5, 3)])[0])
