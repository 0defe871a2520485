"""mlp and FusedMLP (the activation recomputed in the backward): float64 gradcheck, FusedMLP against
mlp_composed in both kernel modes, what the node keeps, the fallbacks, torch, and clear errors."""
import numpy as np
import pytest

import miniclip
from miniclip import amp, kernels
from miniclip import functional as F
from miniclip.functional.mlp import FusedMLP, mlp_composed
from tests.helpers import assert_matches_torch, make_inputs
from tests.tolerances import GRADCHECK, KERNEL_FLOAT32, TORCH_FLOAT64

ACTIVATIONS = ["gelu", "quick_gelu"]
NAMES = ["x", "fc_weight", "fc_bias", "proj_weight", "proj_bias"]
SHAPES = {   # x (..., W), fc_weight (H, W), fc_bias (H,), proj_weight (out, H), proj_bias (out,)
    "block_W5_H7": [(2, 3, 5), (7, 5), (7,), (5, 7), (5,)],
    "vector_x_out3": [(5,), (7, 5), (7,), (3, 7), (3,)],
    "one_row_H1": [(1, 1, 4), (1, 4), (1,), (4, 1), (4,)],
}


@pytest.fixture(params=["fast", "reference"])
def mode(request):
    with kernels.use(request.param):
        yield request.param


def mlp_of(activation, fn=F.mlp):
    return lambda x, w1, b1, w2, b2: fn(x, w1, b1, w2, b2, activation=activation)


def run(fn, arrays, dtype):
    """fn on fresh leaf tensors of `dtype`; returns the output tensor and the five input gradients."""
    inputs = [miniclip.tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
    out = fn(*inputs)
    out.backward(np.random.default_rng(1).standard_normal(out.shape).astype(dtype))
    return out, [x.grad for x in inputs]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck(mode, activation):
    inputs = make_inputs(SHAPES["block_W5_H7"])
    assert isinstance(mlp_of(activation)(*inputs)._ctx, FusedMLP)
    assert miniclip.gradcheck(mlp_of(activation), inputs, names=NAMES, **GRADCHECK)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shapes", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fused_matches_composed(mode, activation, shapes, dtype):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(shape) for shape in shapes]
    out, grads = run(mlp_of(activation), arrays, dtype)
    expected, expected_grads = run(mlp_of(activation, mlp_composed), arrays, dtype)
    assert isinstance(out._ctx, FusedMLP) and out.dtype == dtype and all(g.dtype == dtype for g in grads)
    tolerance = TORCH_FLOAT64 if dtype == np.float64 else KERNEL_FLOAT32
    np.testing.assert_allclose(out.data, expected.data, **tolerance, err_msg=f"{activation} ({mode}): output")
    for name, g, e in zip(NAMES, grads, expected_grads):
        np.testing.assert_allclose(g, e, **tolerance, err_msg=f"{activation} ({mode}): gradient of {name}")


def test_without_input_gradient():
    """x that needs no gradient (the backward skips dx): the weights' gradients are unchanged."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5))
    results = []
    for fn in (F.mlp, mlp_composed):
        weights = make_inputs(SHAPES["block_W5_H7"][1:])
        fn(x, *weights).backward(np.ones((3, 5)))
        results.append([w.grad for w in weights])
    for name, g, e in zip(NAMES[1:], *results):
        np.testing.assert_allclose(g, e, **TORCH_FLOAT64, err_msg=f"gradient of {name}")


def saved_arrays(y):
    """{id: array} of every array a node of y's graph keeps as an attribute (its saved tensors)."""
    saved, nodes = {}, [y._ctx]
    while nodes:
        node = nodes.pop()
        saved.update((id(v), v) for v in vars(node).values() if isinstance(v, np.ndarray))
        nodes += [t._ctx for t in node.inputs if t._ctx is not None]
    return saved


def test_the_node_keeps_x_and_h_but_not_the_activation():
    x, w1, b1, w2, b2 = make_inputs([(2, 3, 5), (7, 5), (7,), (5, 7), (5,)])
    y = F.mlp(x, w1, b1, w2, b2)
    node = y._ctx
    arrays = {name: v for name, v in vars(node).items() if isinstance(v, np.ndarray)}
    assert sorted(arrays) == ["b1", "h", "w1", "w2", "x2"]
    assert np.shares_memory(node.x2, x.data) and node.w1 is w1.data and node.w2 is w2.data and node.b1 is b1.data
    np.testing.assert_allclose(node.h, x.data.reshape(6, 5) @ w1.data.T, **TORCH_FLOAT64)   # b1 goes into act
    # Of the hidden-sized arrays (N*H = 6*7 values) the composed graph keeps h and act(h), FusedMLP h only.
    hidden = [[v for v in saved_arrays(fn(x, w1, b1, w2, b2)).values() if v.size == 6 * 7]
              for fn in (F.mlp, mlp_composed)]
    assert [len(h) for h in hidden] == [1, 2]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_under_autocast_mlp_is_exactly_the_composed_path(dtype):
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(shape) for shape in SHAPES["block_W5_H7"]]
    with amp.autocast(dtype):
        out, grads = run(mlp_of("gelu"), arrays, np.float32)
        expected, expected_grads = run(mlp_of("gelu", mlp_composed), arrays, np.float32)
    assert not isinstance(out._ctx, FusedMLP)
    np.testing.assert_array_equal(out.data, expected.data)
    for name, g, e in zip(NAMES, grads, expected_grads):
        np.testing.assert_array_equal(g, e, err_msg=f"gradient of {name}")


def test_without_biases_or_with_mixed_dtypes_mlp_runs_composed():
    x, w1, b1, w2, b2 = make_inputs(SHAPES["block_W5_H7"])
    for args in [(x, w1, None, w2, b2), (x, w1, b1, w2, None), (x.float(), w1, b1, w2, b2)]:
        out = F.mlp(*args)
        assert not isinstance(out._ctx, FusedMLP)
        np.testing.assert_array_equal(out.data, mlp_composed(*args).data)


def torch_mlp(activation):
    def fn(t, x, w1, b1, w2, b2):
        h = t.nn.functional.linear(x, w1, b1)
        a = t.nn.functional.gelu(h) if activation == "gelu" else h * t.sigmoid(1.702 * h)
        return t.nn.functional.linear(a, w2, b2)
    return fn


@pytest.mark.oracle
@pytest.mark.parametrize("shapes", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_matches_torch(torch, activation, shapes):
    assert_matches_torch(torch, mlp_of(activation), torch_mlp(activation), make_inputs(shapes))


BAD = [
    # shapes of x, fc_weight, fc_bias, proj_weight, proj_bias; activation; words the message must contain
    ([(3, 4), (7, 5), (7,), (5, 7), (5,)], "gelu", r"x \(3, 4\), fc_weight \(7, 5\)"),
    ([(3, 5), (7, 5), (7,), (5, 6), (5,)], "gelu", r"proj_weight \(out, H\).*proj_weight \(5, 6\)"),
    ([(3, 5), (7, 5), (5,), (5, 7), (5,)], "gelu", r"fc_bias \(H,\).*fc_bias \(5,\)"),
    ([(3, 5), (7, 5), (7,), (5, 7), (7,)], "gelu", r"proj_bias \(7,\)"),
    ([(3, 5), (7, 5), (7,), (5, 7), (5,)], "relu", r"activation must be one of \('gelu', 'quick_gelu'\), "
                                                   r"got 'relu'"),
]


@pytest.mark.parametrize("shapes, activation, message", BAD)
def test_bad_input_gives_a_clear_error(shapes, activation, message):
    with pytest.raises(ValueError, match=message):
        F.mlp(*make_inputs(shapes), activation=activation)
