"""What the op, functional, nn and model tests share: input makers and the comparison with torch.

A case gives the miniclip function, the same function written with torch, and the inputs as
float64 arrays; non-differentiable arguments (targets, masks, sizes) live inside the functions.
"""
import numpy as np

import miniclip
from tests.tolerances import TORCH_FLOAT64


def normal(rng, shape):
    return rng.standard_normal(shape)


def positive(rng, shape):
    return rng.uniform(0.5, 2.0, shape)


def standard_normal(*shape, seed=0):
    """A float64 array of the shape, drawn with its own seed (for layer tests)."""
    return np.random.default_rng(seed).standard_normal(shape)


def away_from_zero(rng, shape):
    """|x| in [0.1, 2]: far from the kink of |x| at 0 compared with the gradcheck's eps = 1e-6."""
    return rng.uniform(0.1, 2.0, shape) * rng.choice([-1, 1], shape)


def distinct(rng, shape):
    """Values with no ties anywhere, at least 0.1 apart (max splits the gradient between ties)."""
    return rng.permutation(np.prod(shape, dtype=int)).reshape(shape) * 0.1 + rng.uniform(0, 0.01, shape)


def make_inputs(shapes, maker=normal, seed=0):
    """float64 leaf tensors that require gradients, one per shape."""
    rng = np.random.default_rng(seed)
    return [miniclip.tensor(maker(rng, shape), requires_grad=True) for shape in shapes]


def assert_matches_torch(torch, fn, torch_fn, inputs, tolerance=TORCH_FLOAT64):
    """fn(*inputs) and torch_fn(torch, *copies) must agree in value and in the gradient of every
    input that requires one, for the same random upstream gradient."""
    torch_inputs = [torch.tensor(x.data, requires_grad=x.requires_grad) for x in inputs]
    out = fn(*inputs)
    torch_out = torch_fn(torch, *torch_inputs)
    np.testing.assert_allclose(out.data, torch_out.detach().numpy(), **tolerance,
                               err_msg="forward: miniclip (actual) vs torch (desired)")
    upstream = np.random.default_rng(1).standard_normal(out.shape)
    out.backward(upstream)
    torch_out.backward(torch.tensor(upstream))
    for i, (x, tx) in enumerate(zip(inputs, torch_inputs)):
        if x.requires_grad:
            np.testing.assert_allclose(x.grad, tx.grad.numpy(), **tolerance,
                                       err_msg=f"gradient of input {i} (shape {x.shape}): "
                                               "miniclip (actual) vs torch (desired)")
