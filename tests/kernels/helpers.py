"""Checks shared by the kernel tests of softmax_xent and layer_norm."""
import numpy as np

from miniclip.backend import to_numpy


def assert_close(name, got, expected, tol):
    """allclose, with a report naming the output, the worst index, expected and got."""
    got, expected = to_numpy(got), to_numpy(expected)
    assert got.shape == expected.shape, f"{name}: shape {got.shape}, expected {expected.shape}"
    err = np.abs(got.astype(np.float64) - expected) - tol["rtol"] * np.abs(expected)
    if not (err <= tol["atol"]).all():
        k = np.unravel_index(np.argmax(err), err.shape)
        raise AssertionError(f"{name}: at index {k} expected {expected[k]!r}, got {got[k]!r} "
                             f"({int((err > tol['atol']).sum())} of {err.size} entries off; tol {tol})")


def numeric_grad(f, x, eps):
    """Central differences of the scalar f at every entry of x (float64)."""
    grad = np.zeros_like(x)
    for k in np.ndindex(x.shape):
        old = x[k]
        x[k] = old + eps
        up = f(x)
        x[k] = old - eps
        down = f(x)
        x[k] = old
        grad[k] = (up - down) / (2 * eps)
    return grad
