"""layer_norm, batch_norm, normalize: float64 gradcheck and torch on the same inputs (values and
the gradients of the input, weight and bias), batch_norm's running statistics vs torch's, an
all-zero row in normalize, and clear errors for mismatched shapes."""
import numpy as np
import pytest

import miniclip
from miniclip import functional as F
from tests.helpers import assert_matches_torch, away_from_zero, make_inputs, normal
from tests.tolerances import GRADCHECK, TORCH_FLOAT64


def running_stats(C, seed=3):
    """(running_mean, running_var) as a fresh pair of float64 arrays (var positive)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(C), rng.uniform(0.5, 2.0, C)


def batch_norm_case(training, with_affine=True):
    """miniclip and torch batch_norm closures; each call starts from the same running stats."""
    def ours(x, *affine):
        return F.batch_norm(x, *running_stats(x.shape[1]), *affine, training=training)

    def theirs(t, x, *affine):
        mean, var = (t.tensor(s) for s in running_stats(x.shape[1]))
        return t.nn.functional.batch_norm(x, mean, var, *affine, training=training)
    return ours, theirs


CASES = [
    # name, miniclip fn, torch fn, input shapes, input maker
    ("layer_norm_last_dim", lambda x, w, b: F.layer_norm(x, 7, w, b),
     lambda t, x, w, b: t.nn.functional.layer_norm(x, (7,), w, b), [(3, 5, 7), (7,), (7,)], normal),
    ("layer_norm_two_dims", lambda x, w, b: F.layer_norm(x, (5, 3), w, b),
     lambda t, x, w, b: t.nn.functional.layer_norm(x, (5, 3), w, b), [(2, 5, 3), (5, 3), (5, 3)], normal),
    ("layer_norm_no_affine_one_row", lambda x: F.layer_norm(x, (3,)),
     lambda t, x: t.nn.functional.layer_norm(x, (3,)), [(1, 3)], normal),
    ("layer_norm_eps", lambda x: F.layer_norm(x, (5,), eps=0.1),
     lambda t, x: t.nn.functional.layer_norm(x, (5,), eps=0.1), [(3, 5)], normal),
    ("batch_norm_train_4d", *batch_norm_case(training=True), [(3, 5, 2, 1), (5,), (5,)], normal),
    ("batch_norm_train_2d_no_affine", *batch_norm_case(training=True), [(7, 3)], normal),
    ("batch_norm_eval_4d", *batch_norm_case(training=False), [(2, 3, 1, 5), (3,), (3,)], normal),
    ("normalize_p2_dim1", lambda x: F.normalize(x), lambda t, x: t.nn.functional.normalize(x),
     [(3, 5)], normal),
    ("normalize_p2_last_dim", lambda x: F.normalize(x, dim=-1),
     lambda t, x: t.nn.functional.normalize(x, dim=-1), [(2, 3, 7)], normal),
    ("normalize_p1_dim0", lambda x: F.normalize(x, p=1.0, dim=0),
     lambda t, x: t.nn.functional.normalize(x, p=1.0, dim=0), [(5, 3)], away_from_zero),
    ("normalize_p3_size1_dim", lambda x: F.normalize(x, p=3.0, dim=1),
     lambda t, x: t.nn.functional.normalize(x, p=3.0, dim=1), [(3, 1)], away_from_zero),
]


@pytest.mark.parametrize("name, fn, torch_fn, shapes, maker", CASES, ids=[c[0] for c in CASES])
def test_gradcheck(name, fn, torch_fn, shapes, maker):
    assert miniclip.gradcheck(fn, make_inputs(shapes, maker), **GRADCHECK)


@pytest.mark.oracle
@pytest.mark.parametrize("name, fn, torch_fn, shapes, maker", CASES, ids=[c[0] for c in CASES])
def test_matches_torch(torch, name, fn, torch_fn, shapes, maker):
    assert_matches_torch(torch, fn, torch_fn, make_inputs(shapes, maker))


@pytest.mark.oracle
@pytest.mark.parametrize("as_tensors", [False, True], ids=["arrays", "tensors"])
def test_batch_norm_updates_running_stats_as_torch(torch, as_tensors):
    mean, var = running_stats(5)
    torch_mean, torch_var = torch.tensor(mean), torch.tensor(var)
    if as_tensors:
        mean, var = miniclip.tensor(mean), miniclip.tensor(var)
    for step in range(3):                # three batches of 3 x 2 x 1 = 6 values per channel
        x = make_inputs([(3, 5, 2, 1)], seed=step)[0]
        F.batch_norm(x, mean, var, training=True, momentum=0.2)
        torch.nn.functional.batch_norm(torch.tensor(x.data), torch_mean, torch_var, training=True,
                                       momentum=0.2)
    for name, ours, theirs in (("running_mean", mean, torch_mean), ("running_var", var, torch_var)):
        ours = ours.data if as_tensors else ours
        np.testing.assert_allclose(ours, theirs.numpy(), **TORCH_FLOAT64, err_msg=name)


def test_batch_norm_eval_leaves_running_stats_alone():
    mean, var = running_stats(5)
    F.batch_norm(make_inputs([(3, 5)])[0], mean, var, training=False)
    np.testing.assert_array_equal(np.stack([mean, var]), np.stack(running_stats(5)))


@pytest.mark.oracle
def test_normalize_an_all_zero_row_has_a_finite_gradient(torch):
    def with_zero_row(x):
        return F.normalize(x * np.array([[1.0], [0.0], [1.0]]))

    def torch_with_zero_row(t, x):
        return t.nn.functional.normalize(x * t.tensor([[1.0], [0.0], [1.0]]))

    assert_matches_torch(torch, with_zero_row, torch_with_zero_row, make_inputs([(3, 4)]))


BAD = [
    # call, words the message must contain
    (lambda x: F.layer_norm(x, 5), r"normalized_shape \(5,\) must match .* input of shape \(3, 4\)"),
    (lambda x: F.layer_norm(x, 4, weight=miniclip.ones(5)), r"weight must have shape \(4,\), got \(5,\)"),
    (lambda x: F.batch_norm(x, *running_stats(5)), r"running_mean must have shape \(4,\) for input \(3, 4\)"),
    (lambda x: F.batch_norm(x[:1], None, None, training=True), r"more than 1 value per channel, got input \(1, 4\)"),
    (lambda x: F.batch_norm(x, None, None), r"training=False needs running_mean and running_var"),
]


@pytest.mark.parametrize("call, message", BAD)
def test_bad_input_gives_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(make_inputs([(3, 4)])[0])
