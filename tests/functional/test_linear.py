"""linear and embedding: float64 gradcheck, torch on the same inputs, and clear errors."""
import numpy as np
import pytest

import miniclip
from miniclip import functional as F
from tests.helpers import assert_matches_torch, make_inputs, normal
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


@pytest.mark.parametrize("x_shape, out_features, bias", [((7, 13), 5, True), ((2, 3, 13), 1, True),
                                                         ((13,), 5, True), ((3, 1, 13), 5, False)])
def test_fused_linear_matches_composed(x_shape, out_features, bias):
    """FusedLinear (bias added in place, hand-written backward) against linear_composed, whose
    backward autograd derives: values and the gradients of x, weight and bias, float32."""
    from miniclip.functional.linear import FusedLinear, linear_composed
    rng = np.random.default_rng(7)
    arrays = [rng.standard_normal(x_shape), rng.standard_normal((out_features, x_shape[-1]))]
    if bias:
        arrays.append(rng.standard_normal(out_features))
    dy = rng.standard_normal(x_shape[:-1] + (out_features,)).astype(np.float32)
    results = []
    for fn in (F.linear, linear_composed):
        inputs = [miniclip.tensor(a.astype(np.float32), requires_grad=True) for a in arrays]
        y = fn(*inputs)
        assert (y._ctx.__class__ is FusedLinear) == (fn is F.linear)
        y.backward(dy)
        results.append([y.data] + [t.grad for t in inputs])
    for name, got, expected in zip(["y", "dx", "dweight", "dbias"], *results):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=f"FusedLinear {name}")


def test_fused_linear_on_a_strided_input_and_without_input_gradient():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 26)).astype(np.float32)[:, ::2]               # (4, 13), strided
    w = miniclip.tensor(rng.standard_normal((5, 13)).astype(np.float32), requires_grad=True)
    y = F.linear(x, w)
    y.backward(np.ones((4, 5), np.float32))
    np.testing.assert_allclose(y.data, x @ w.data.T, rtol=1e-6)
    np.testing.assert_allclose(w.grad, np.ones((5, 4), np.float32) @ x, rtol=1e-6)
