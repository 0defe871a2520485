"""Gradient checking: compare a hand-written backward with central finite differences.

For a function f of tensors and a random upstream gradient g (never all ones, so that every
output element is weighted differently), the scalar L(x) = sum(g * f(x)) has the gradient
dL/dx that `backward(g)` computes. Central differences estimate the same number without any
calculus:

    dL/dx_i  ~  (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)          error O(eps^2)

For small inputs every element i is checked (the full vector-Jacobian product). For large ones
a few random directions r are checked instead: (L(x + eps r) - L(x - eps r)) / (2 eps) must equal
sum(dL/dx * r).

Only float64 works: with eps = 1e-6 the difference L(x + eps) - L(x - eps) is about 1e-6 * L,
and float32 keeps only ~7 significant digits, so nearly all of them would cancel.
"""
import numpy as np

from miniclip.backend import get_array_module, to_numpy
from miniclip.tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """Raised when the analytic gradient and the numeric one disagree."""


def gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, max_full_size=400, n_directions=6,
              seed=0, names=None):
    """Check the backward of `fn(*inputs)` against central differences; return True or raise.

    fn:      a function of the input tensors that returns one tensor.
    inputs:  tensors (float64); those with requires_grad=True are checked, others held fixed.
    eps:     the finite-difference step.
    atol, rtol: an entry passes when |numeric - analytic| <= atol + rtol * |numeric|.
    max_full_size: inputs with at most this many elements are checked element by element,
             larger ones along `n_directions` random directions.
    names:   optional names of the inputs, used in the failure report.
    """
    inputs = list(inputs)
    names = list(names) if names is not None else [f"input {i}" for i in range(len(inputs))]
    for name, x in zip(names, inputs):
        if isinstance(x, Tensor) and x.dtype.kind == "f" and x.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 inputs, but {name} is {x.dtype}: central "
                            f"differences with eps={eps} subtract two nearly equal numbers, and "
                            "float32 (~7 significant digits) loses almost all of them. "
                            "Use miniclip.tensor(data, dtype=np.float64).")
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, so there is nothing to check")

    # The analytic side: one backward pass with a random upstream gradient.
    for i in checked:
        inputs[i].grad = None
    output = fn(*inputs)
    xp = get_array_module(output.data)
    rng = np.random.default_rng(seed)
    upstream = xp.asarray(rng.uniform(0.5, 1.5, output.shape) * rng.choice([-1, 1], output.shape))
    output.backward(upstream.astype(output.dtype))

    def loss():
        with no_grad():
            return float((fn(*inputs).data * upstream).sum())

    for i in checked:
        x = inputs[i]
        analytic = x.grad if x.grad is not None else xp.zeros_like(x.data)
        if x.size <= max_full_size:
            _check_every_element(loss, x, analytic, names[i], eps, atol, rtol)
        else:
            _check_directions(loss, x, analytic, names[i], eps, atol, rtol, n_directions, rng)
    return True


def _check_every_element(loss, x, analytic, name, eps, atol, rtol):
    numeric = np.zeros(x.shape)
    x.data = get_array_module(x.data).ascontiguousarray(x.data).reshape(x.shape)   # keeps 0-d inputs 0-d
    flat = x.data.reshape(-1)                 # a view: writing to it perturbs x in place
    for i in range(flat.size):
        original = flat[i].item()
        flat[i] = original + eps
        plus = loss()
        flat[i] = original - eps
        minus = loss()
        flat[i] = original
        numeric.reshape(-1)[i] = (plus - minus) / (2 * eps)
    _compare(numeric, to_numpy(analytic), name, atol, rtol)


def _check_directions(loss, x, analytic, name, eps, atol, rtol, n_directions, rng):
    xp = get_array_module(x.data)
    original = x.data.copy()
    for k in range(n_directions):
        direction = xp.asarray(rng.standard_normal(x.shape))
        x.data[...] = original + eps * direction
        plus = loss()
        x.data[...] = original - eps * direction
        minus = loss()
        x.data[...] = original
        numeric = (plus - minus) / (2 * eps)
        expected = float((analytic * direction).sum())
        if not abs(numeric - expected) <= atol * np.sqrt(x.size) + rtol * abs(numeric):
            raise GradcheckError(
                f"gradcheck failed for {name} (shape {x.shape}) along random direction {k}:\n"
                f"  numeric  (finite differences) d/dt L(x + t r) = {numeric:.10g}\n"
                f"  analytic (backward)           sum(grad * r)   = {expected:.10g}\n"
                f"  abs error {abs(numeric - expected):.3g}, "
                + (f"rel error {abs(numeric - expected) / abs(numeric):.3g}" if abs(numeric) > atol
                   else "the numeric value is 0 (within atol), so no relative error"))


def _compare(numeric, analytic, name, atol, rtol):
    error = np.abs(numeric - analytic)
    bad = error > atol + rtol * np.abs(numeric)
    if not bad.any():
        return
    worst = np.unravel_index(np.argmax(np.where(bad, error, -1)), numeric.shape)
    # A relative error means nothing where the true gradient is 0: it is counted apart.
    nonzero = np.abs(numeric) > atol
    rel = f", max rel error {(error[nonzero] / np.abs(numeric[nonzero])).max():.3g}" if nonzero.any() else ""
    at_zero = int((bad & ~nonzero).sum())
    raise GradcheckError(
        f"gradcheck failed for {name} (shape {numeric.shape}): {int(bad.sum())} of {bad.size} "
        f"entries differ.\n"
        f"  worst at index {tuple(int(i) for i in worst)}: numeric (finite differences) "
        f"{numeric[worst]:.10g}, analytic (backward) {analytic[worst]:.10g}\n"
        f"  max abs error {error.max():.3g}{rel} "
        f"(allowed: atol {atol:g} + rtol {rtol:g} * |numeric|)"
        + (f"\n  {at_zero} of the differing entries are where the numeric gradient is 0 (within atol): "
           f"the backward gives a gradient where there should be none" if at_zero else ""))
