"""Property-based tests (hypothesis): binary ops and reductions over random broadcasting shapes.

For any pair of shapes that broadcast together, every binary op's gradient must have its
input's shape and must equal the finite-difference gradient; every reduction over any set of
dimensions must too.
"""
import numpy as np
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import miniclip
from miniclip import ops
from tests.tolerances import GRADCHECK

BINARY = {"add": ops.add, "sub": ops.sub, "mul": ops.mul, "div": ops.div,
          "maximum": ops.maximum, "minimum": ops.minimum}


@settings(max_examples=40, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=4),
       op=st.sampled_from(sorted(BINARY)), seed=st.integers(0, 2**16))
def test_binary_ops_sum_gradients_back_to_each_shape(shapes, op, seed):
    rng = np.random.default_rng(seed)
    x_shape, y_shape = shapes.input_shapes
    # positive and tie-free, so div and maximum/minimum are smooth at the inputs
    x = miniclip.tensor(rng.uniform(1.0, 2.0, x_shape), requires_grad=True)
    y = miniclip.tensor(rng.uniform(2.5, 3.5, y_shape) * rng.choice([1, 0.3], y_shape), requires_grad=True)
    out = BINARY[op](x, y)
    assert out.shape == shapes.result_shape
    assert miniclip.gradcheck(BINARY[op], [x, y], **GRADCHECK)
    assert x.grad.shape == x_shape and y.grad.shape == y_shape


@st.composite
def shape_and_dims(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, max_side=5))
    dims = draw(st.one_of(st.none(), st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True)))
    return shape, dims, draw(st.booleans())


@settings(max_examples=40, deadline=None)
@given(case=shape_and_dims(), reduction=st.sampled_from(["sum", "mean", "max"]), seed=st.integers(0, 2**16))
def test_reductions_over_any_dims(case, reduction, seed):
    shape, dims, keepdim = case
    rng = np.random.default_rng(seed)
    values = rng.permutation(int(np.prod(shape))).reshape(shape) + rng.uniform(0, 0.5, shape)   # no ties
    x = miniclip.tensor(values, requires_grad=True)
    fn = getattr(ops, reduction)
    expected = getattr(np, {"sum": "sum", "mean": "mean", "max": "max"}[reduction])(
        values, axis=None if dims is None else tuple(dims), keepdims=keepdim)
    np.testing.assert_allclose(fn(x, dims, keepdim).data, expected)
    assert miniclip.gradcheck(lambda a: fn(a, dims, keepdim), [x], **GRADCHECK)
