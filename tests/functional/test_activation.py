"""softmax, log_softmax, logsumexp, gelu, quick_gelu, logsigmoid, dropout.

Every case: float64 gradcheck, and forward + gradients vs torch on the same inputs. Then rows of
+-1e4 against closed forms (float32 and float64), and dropout's mask statistics and scaling.
"""
import math

import numpy as np
import pytest

import miniclip
from miniclip import functional as F
from tests.helpers import assert_matches_torch, make_inputs, normal
from tests.tolerances import GRADCHECK


def wide(rng, shape):
    """Normal values times 3: logsigmoid and gelu see both tails, not only the middle."""
    return 3 * rng.standard_normal(shape)


CASES = [
    # name, miniclip fn, torch fn, input shapes, input maker
    ("softmax_last_dim", lambda x: F.softmax(x, -1), lambda t, x: t.softmax(x, -1), [(3, 7)], normal),
    ("softmax_dim0_size1_middle", lambda x: F.softmax(x, 0), lambda t, x: t.softmax(x, 0), [(5, 1, 3)], normal),
    ("log_softmax_last_dim", lambda x: F.log_softmax(x, -1), lambda t, x: t.log_softmax(x, -1), [(3, 7)], normal),
    ("log_softmax_dim1", lambda x: F.log_softmax(x, 1), lambda t, x: t.log_softmax(x, 1), [(2, 5, 3)], normal),
    ("logsumexp_dim1", lambda x: F.logsumexp(x, 1), lambda t, x: t.logsumexp(x, 1), [(3, 7, 2)], normal),
    ("logsumexp_dims_keepdim", lambda x: F.logsumexp(x, (0, 2), keepdim=True),
     lambda t, x: t.logsumexp(x, (0, 2), keepdim=True), [(3, 1, 5)], normal),
    ("gelu", F.gelu, lambda t, x: t.nn.functional.gelu(x), [(3, 7)], wide),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"),
     lambda t, x: t.nn.functional.gelu(x, approximate="tanh"), [(5, 3)], wide),
    ("quick_gelu", F.quick_gelu, lambda t, x: x * t.sigmoid(1.702 * x), [(3, 7)], wide),
    ("logsigmoid", F.logsigmoid, lambda t, x: t.nn.functional.logsigmoid(x), [(3, 7)], wide),
]


@pytest.mark.parametrize("name, fn, torch_fn, shapes, maker", CASES, ids=[c[0] for c in CASES])
def test_gradcheck(name, fn, torch_fn, shapes, maker):
    assert miniclip.gradcheck(fn, make_inputs(shapes, maker), **GRADCHECK)


@pytest.mark.oracle
@pytest.mark.parametrize("name, fn, torch_fn, shapes, maker", CASES, ids=[c[0] for c in CASES])
def test_matches_torch(torch, name, fn, torch_fn, shapes, maker):
    assert_matches_torch(torch, fn, torch_fn, make_inputs(shapes, maker))


# Rows of +-1e4. With c = log(1 + e^-1), the exact answers are
#   row [1e4, -1e4, 1e4 - 1, 0]:  log_softmax = [-c, -2e4 - c, -1 - c, -1e4 - c]
#   row [-1e4, 1e4, -1e4 - 1, 0]: log_softmax = [-2e4, 0, -2e4 - 1, -1e4]   (the e^-2e4 terms vanish)
HUGE_ROWS = np.array([[1e4, -1e4, 1e4 - 1, 0.0], [-1e4, 1e4, -1e4 - 1, 0.0]])
C = math.log1p(math.exp(-1))
HUGE_LOG_SOFTMAX = np.array([[-C, -2e4 - C, -1 - C, -1e4 - C], [-2e4, 0.0, -2e4 - 1, -1e4]])
STABLE = [
    ("softmax", lambda x: F.softmax(x, -1), np.exp(HUGE_LOG_SOFTMAX)),
    ("log_softmax", lambda x: F.log_softmax(x, -1), HUGE_LOG_SOFTMAX),
    ("logsumexp", lambda x: F.logsumexp(x, -1), np.array([1e4 + C, 1e4])),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, fn, expected", STABLE, ids=[c[0] for c in STABLE])
def test_rows_of_1e4_do_not_overflow(name, fn, expected, dtype):
    x = miniclip.tensor(HUGE_ROWS, dtype=dtype, requires_grad=True)
    y = fn(x)
    assert y.dtype == dtype
    np.testing.assert_allclose(y.data, expected, rtol=1e-6, atol=1e-30)
    y.backward(np.ones(y.shape, dtype=dtype))
    assert np.isfinite(x.grad).all(), f"{name}: gradient of rows of +-1e4 is not finite: {x.grad}"


def test_large_negative_logsigmoid_is_exact():
    x = miniclip.tensor(np.array([-800.0, 800.0, -30.0]), requires_grad=True)
    y = F.logsigmoid(x)
    np.testing.assert_allclose(y.data, [-800.0, 0.0, -30.0 - math.log1p(math.exp(-30))], rtol=1e-12)
    y.backward(np.ones(3))
    np.testing.assert_allclose(x.grad, [1.0, 0.0, 1 / (1 + math.exp(-30))], rtol=1e-12)


def test_dropout_mask_statistics_and_scaling():
    p = 0.3
    miniclip.manual_seed(0)
    x = miniclip.ones(200, 500, dtype=np.float32, requires_grad=True)
    y = F.dropout(x, p)
    assert y.dtype == np.float32
    kept = y.data != 0
    # 1e5 Bernoulli draws: the dropped fraction has standard deviation sqrt(p (1-p) / 1e5) = 0.0014
    assert abs((1 - kept.mean()) - p) < 0.006, f"dropped fraction {1 - kept.mean():.4f}, expected {p}"
    np.testing.assert_allclose(y.data[kept], 1 / (1 - p), rtol=1e-6)
    y.backward(np.full(y.shape, 2.0, dtype=np.float32))
    np.testing.assert_allclose(x.grad, 2.0 * y.data, rtol=1e-6)     # the same mask and scale


@pytest.mark.parametrize("p, training", [(0.5, False), (0.0, True)])
def test_dropout_is_the_identity_when_not_training_or_p_is_0(p, training):
    x = make_inputs([(3, 5)])[0]
    y = F.dropout(x, p, training=training)
    np.testing.assert_array_equal(y.data, x.data)


def test_dropout_with_p_1_zeroes_everything():
    x = make_inputs([(3, 5)])[0]
    np.testing.assert_array_equal(F.dropout(x, 1.0).data, np.zeros((3, 5)))


def test_dropout_gradcheck_with_a_fixed_seed():
    def dropped(x):
        miniclip.manual_seed(7)        # the same mask on every call of the gradient check
        return F.dropout(x, p=0.4)

    assert miniclip.gradcheck(dropped, make_inputs([(3, 7)]), **GRADCHECK)


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_dropout_rejects_a_p_outside_0_1(p):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        F.dropout(make_inputs([(2, 2)])[0], p)


def test_gelu_rejects_an_unknown_approximation():
    with pytest.raises(ValueError, match="'none' or 'tanh'"):
        F.gelu(make_inputs([(2, 2)])[0], approximate="erf")
