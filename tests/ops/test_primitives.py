"""Every primitive op: float64 gradcheck on irregular shapes, and forward + gradients vs torch.

Each case is (name, miniclip function, torch function, input shapes, how to make the inputs).
Inputs are kept away from kinks: relu/abs/clamp inputs avoid 0 and the clamp bounds, max
and maximum/minimum inputs have no ties, log/sqrt/pow bases are positive.
"""
import numpy as np
import pytest

import miniclip
from miniclip import ops
from tests.helpers import away_from_zero, distinct, make_inputs, normal, positive
from tests.tolerances import GRADCHECK, TORCH_FLOAT64

CASES = [
    # name, miniclip fn, torch fn, shapes, input maker
    ("add", ops.add, lambda t, x, y: x + y, [(3, 5), (5,)], normal),
    ("add_broadcast_both", ops.add, lambda t, x, y: x + y, [(3, 1, 7), (2, 7)], normal),
    ("sub", ops.sub, lambda t, x, y: x - y, [(1, 5), (3, 1)], normal),
    ("mul", ops.mul, lambda t, x, y: x * y, [(2, 3, 5), (3, 1)], normal),
    ("div", ops.div, lambda t, x, y: x / y, [(3, 5), (3, 5)], positive),
    ("div_broadcast", ops.div, lambda t, x, y: x / y, [(7,), (3, 1)], positive),
    ("neg", ops.neg, lambda t, x: -x, [(4, 3)], normal),
    ("pow_tensor_exponent", ops.pow, lambda t, x, p: x ** p, [(3, 5), (5,)], positive),
    ("exp", ops.exp, lambda t, x: x.exp(), [(3, 7)], normal),
    ("log", ops.log, lambda t, x: x.log(), [(3, 7)], positive),
    ("sqrt", ops.sqrt, lambda t, x: x.sqrt(), [(5, 1)], positive),
    ("tanh", ops.tanh, lambda t, x: x.tanh(), [(2, 3, 5)], normal),
    ("sigmoid", ops.sigmoid, lambda t, x: x.sigmoid(), [(13,)], normal),
    ("relu", ops.relu, lambda t, x: x.relu(), [(3, 7)], away_from_zero),
    ("abs", ops.abs, lambda t, x: x.abs(), [(3, 7)], away_from_zero),
    ("maximum", ops.maximum, lambda t, x, y: t.maximum(x, y), [(3, 5), (5,)], distinct),
    ("minimum", ops.minimum, lambda t, x, y: t.minimum(x, y), [(3, 1), (1, 5)], distinct),
    ("sum_all", lambda x: ops.sum(x), lambda t, x: x.sum(), [(3, 5)], normal),
    ("sum_dim", lambda x: ops.sum(x, 1), lambda t, x: x.sum(1), [(3, 5, 2)], normal),
    ("sum_dims_keepdim", lambda x: ops.sum(x, (0, 2), True), lambda t, x: x.sum((0, 2), True),
     [(3, 5, 2)], normal),
    ("mean_all", lambda x: ops.mean(x), lambda t, x: x.mean(), [(7, 3)], normal),
    ("mean_dim_negative", lambda x: ops.mean(x, -1, True), lambda t, x: x.mean(-1, True), [(2, 3, 5)], normal),
    ("max_all", lambda x: ops.max(x), lambda t, x: x.amax(), [(3, 5)], distinct),
    ("max_dim", lambda x: ops.max(x, 1), lambda t, x: x.amax(1), [(3, 7, 2)], distinct),
    ("max_dims_keepdim", lambda x: ops.max(x, (0, 2), True), lambda t, x: x.amax((0, 2), True),
     [(3, 7, 2)], distinct),
    ("reshape", lambda x: ops.reshape(x, (5, 3, 1)), lambda t, x: x.reshape(5, 3, 1), [(3, 5)], normal),
    ("flatten", lambda x: ops.flatten(x, 1), lambda t, x: x.flatten(1), [(2, 3, 5)], normal),
    ("transpose", lambda x: ops.transpose(x, 0, 2), lambda t, x: x.transpose(0, 2), [(2, 3, 5)], normal),
    ("permute", lambda x: ops.permute(x, (1, 2, 0)), lambda t, x: x.permute(1, 2, 0), [(2, 3, 5)], normal),
    ("expand", lambda x: ops.expand(x, (4, 3, 5)), lambda t, x: x.expand(4, 3, 5), [(3, 1)], normal),
    ("unsqueeze", lambda x: ops.unsqueeze(x, 1), lambda t, x: x.unsqueeze(1), [(3, 5)], normal),
    ("getitem_basic", lambda x: x[1:, None, ::2], lambda t, x: x[1:, None, ::2], [(3, 5)], normal),
    ("getitem_int_array_repeats", lambda x: x[np.array([2, 0, 2, 2])], lambda t, x: x[[2, 0, 2, 2]],
     [(3, 5)], normal),
    ("getitem_two_arrays", lambda x: x[np.array([0, 2, 0]), np.array([1, 1, 4])],
     lambda t, x: x[[0, 2, 0], [1, 1, 4]], [(3, 5)], normal),
    ("getitem_bool_mask", lambda x: x[np.array([True, False, True])],
     lambda t, x: x[t.tensor([True, False, True])], [(3, 5)], normal),
    ("concat", lambda x, y: ops.concat([x, y], 1), lambda t, x, y: t.cat([x, y], 1), [(3, 2), (3, 5)], normal),
    ("stack", lambda x, y: ops.stack([x, y], -1), lambda t, x, y: t.stack([x, y], -1), [(3, 2), (3, 2)], normal),
    ("matmul_2d", ops.matmul, lambda t, x, y: x @ y, [(3, 5), (5, 7)], normal),
    ("matmul_batched_broadcast", ops.matmul, lambda t, x, y: x @ y, [(2, 1, 3, 5), (4, 5, 2)], normal),
    ("matmul_rows_times_matrix", ops.matmul, lambda t, x, y: x @ y, [(2, 3, 5), (5, 7)], normal),
    ("matmul_rows_times_transposed", lambda x, y: x @ y.T, lambda t, x, y: x @ y.T, [(2, 3, 5), (7, 5)], normal),
    ("matmul_vector_left", ops.matmul, lambda t, x, y: x @ y, [(5,), (2, 5, 3)], normal),
    ("matmul_vector_right", ops.matmul, lambda t, x, y: x @ y, [(2, 3, 5), (5,)], normal),
    ("matmul_vector_vector", ops.matmul, lambda t, x, y: x @ y, [(5,), (5,)], normal),
]


@pytest.mark.parametrize("name, fn, torch_fn, shapes, maker", CASES, ids=[c[0] for c in CASES])
def test_gradcheck(name, fn, torch_fn, shapes, maker):
    assert miniclip.gradcheck(fn, make_inputs(shapes, maker), **GRADCHECK)


@pytest.mark.oracle
@pytest.mark.parametrize("name, fn, torch_fn, shapes, maker", CASES, ids=[c[0] for c in CASES])
def test_matches_torch(torch, name, fn, torch_fn, shapes, maker):
    inputs = make_inputs(shapes, maker)
    torch_inputs = [torch.tensor(x.data, requires_grad=True) for x in inputs]
    out = fn(*inputs)
    torch_out = torch_fn(torch, *torch_inputs)
    np.testing.assert_allclose(out.data, torch_out.detach().numpy(), **TORCH_FLOAT64)
    upstream = np.random.default_rng(1).standard_normal(out.shape)
    out.backward(upstream)
    torch_out.backward(torch.tensor(upstream))
    for x, tx in zip(inputs, torch_inputs):
        np.testing.assert_allclose(x.grad, tx.grad.numpy(), **TORCH_FLOAT64)


@pytest.mark.parametrize("name, fn, torch_fn, shapes, maker", CASES, ids=[c[0] for c in CASES])
def test_float32_stays_float32(name, fn, torch_fn, shapes, maker):
    """No op may promote float32 gradients to float64 (the fused kernels refuse mixed dtypes)."""
    inputs = [miniclip.tensor(x.data.astype(np.float32), requires_grad=True) for x in make_inputs(shapes, maker)]
    out = fn(*inputs)
    assert out.dtype == np.float32, name
    out.backward(np.ones(out.shape, np.float32))
    assert [x.grad.dtype for x in inputs] == [np.float32] * len(inputs), name


def test_where_and_clamp_and_split():
    rng = np.random.default_rng(0)
    condition = rng.random((3, 5)) > 0.5
    x, y = make_inputs([(3, 5), (5,)], normal)
    assert miniclip.gradcheck(lambda a, b: ops.where(condition, a, b), [x, y], **GRADCHECK)
    z = miniclip.tensor(away_from_zero(rng, (4, 7)) * 2, requires_grad=True)
    z.data[np.abs(np.abs(z.data) - 1) < 0.05] = 1.5           # keep off the bounds ±1
    assert miniclip.gradcheck(lambda a: ops.clamp(a, -1.0, 1.0), [z], **GRADCHECK)
    assert miniclip.gradcheck(lambda a: ops.clamp(a, min=-1.0), [z], **GRADCHECK)
    w = miniclip.tensor(normal(rng, (7, 3)), requires_grad=True)
    assert miniclip.gradcheck(lambda a: ops.stack(ops.split(a, [2, 1, 4], 0)[::2][:1] * 2, 0), [w], **GRADCHECK)
    assert miniclip.gradcheck(lambda a: ops.concat(ops.split(a, 3, 0)[1:], 0) * 3, [w], **GRADCHECK)
    assert miniclip.gradcheck(lambda a: ops.chunk(a, 2, 1)[1], [w], **GRADCHECK)


@pytest.mark.oracle
def test_where_clamp_split_match_torch(torch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 7)) * 2
    condition = x > 0.3
    mx = miniclip.tensor(x, requires_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    ours = ops.where(condition, ops.clamp(mx, -1.0, 1.5), mx * 3) + ops.split(mx, [3, 4], 1)[1].sum()
    theirs = torch.where(torch.tensor(condition), tx.clamp(-1.0, 1.5), tx * 3) + tx.split([3, 4], 1)[1].sum()
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), **TORCH_FLOAT64)
    ours.sum().backward()
    theirs.sum().backward()
    np.testing.assert_allclose(mx.grad, tx.grad.numpy(), **TORCH_FLOAT64)


def test_ties_share_the_gradient():
    # max: three tied maxima share dy equally; maximum: a tie splits dy in half (as torch)
    x = miniclip.tensor([1.0, 3.0, 3.0, 0.0, 3.0], requires_grad=True)
    ops.max(x).backward()
    np.testing.assert_allclose(x.grad, [0, 1 / 3, 1 / 3, 0, 1 / 3])
    a = miniclip.tensor([1.0, 2.0], requires_grad=True)
    b = miniclip.tensor([1.0, 0.0], requires_grad=True)
    ops.maximum(a, b).sum().backward()
    np.testing.assert_allclose(a.grad, [0.5, 1.0])
    np.testing.assert_allclose(b.grad, [0.5, 0.0])


@pytest.mark.oracle
def test_max_ties_match_torch_amax(torch):
    data = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    x = miniclip.tensor(data, requires_grad=True)
    tx = torch.tensor(data, requires_grad=True)
    ops.max(x, 1).sum().backward()
    tx.amax(1).sum().backward()
    np.testing.assert_allclose(x.grad, tx.grad.numpy())


def test_relu_and_abs_kinks_follow_torch():
    x = miniclip.tensor([0.0, -1.0, 2.0], requires_grad=True)
    (ops.relu(x) + ops.abs(x)).sum().backward()
    np.testing.assert_allclose(x.grad, [0.0, -1.0, 2.0])     # both derivatives are 0 at x = 0


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(3, 5\) @ \(4, 2\)"):
        ops.matmul(miniclip.zeros(3, 5), miniclip.zeros(4, 2))
    with pytest.raises(ValueError, match="add up to 5"):
        ops.split(miniclip.zeros(7), [2, 3])
    with pytest.raises(ValueError, match="not a permutation"):
        ops.permute(miniclip.zeros(2, 3), (0, 0))


def test_tensor_methods_and_operators_reach_the_ops():
    rng = np.random.default_rng(3)
    x = miniclip.tensor(positive(rng, (3, 4)), requires_grad=True)

    def uses_every_operator(a):
        b = (2 + a) * 3 - 1 / a + a ** 2 - (-a) / 2
        c = (b @ a.T).reshape(9).view(3, 3).permute(1, 0).transpose(0, 1).flatten()
        return (c.exp().log() + c.sqrt().tanh().sigmoid() + c.abs().relu()).mean() + a.max(1).sum()
    assert miniclip.gradcheck(uses_every_operator, [x], **GRADCHECK)
