"""miniclip.kernels.layer_norm: layer norm, GELU and QuickGELU, every implementation against
reference.py, and reference.py against float64 central differences and torch.

One test body per kernel runs numba_cpu and every numba_cuda version (in Numba's simulator here,
on CuPy arrays on a real GPU) on irregular shapes in float32 and float64, including rows whose
mean is far larger than their spread (where a sum / sum-of-squares variance would cancel).
"""
import functools
import sys

import numpy as np
import pytest

from miniclip import kernels
from miniclip.kernels import layer_norm
from miniclip.kernels.layer_norm import numba_cpu, reference
from tests.kernels.helpers import assert_close, numeric_grad
from tests.tolerances import GRADCHECK, KERNEL_FLOAT32, TORCH_FLOAT64

# Same formulas, different summation orders: float64 results agree to a few roundings.
TOLERANCE = {np.float32: KERNEL_FLOAT32, np.float64: TORCH_FLOAT64}
EPS = 1e-5


@pytest.fixture(scope="module", autouse=True)
def fast_simulator():
    """The simulator runs each CUDA thread as a Python thread, and every barrier waits for the
    interpreter's switch interval (5 ms): a shorter one makes the CUDA tests ~10x faster."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(interval)


def make_inputs(rng, N, C, dtype):
    """x whose rows cycle through: standard normal, 1e3 + normal (|mean| >> std), -50 + 10 normal;
    weight and bias near 1 and 0 but not equal to them; dy random (never all ones)."""
    offsets = np.array([0.0, 1e3, -50.0])[np.arange(N) % 3]
    spreads = np.array([1.0, 1.0, 10.0])[np.arange(N) % 3]
    x = offsets[:, None] + spreads[:, None] * rng.standard_normal((N, C))
    weight = 1 + 0.3 * rng.standard_normal(C)
    bias = 0.3 * rng.standard_normal(C)
    dy = rng.standard_normal((N, C))
    return [a.astype(dtype) for a in (x, weight, bias, dy)]


def cuda_version(fn, version, **launch):
    """A numba_cuda wrapper pinned to one version, with small blocks for the simulator."""
    from miniclip.kernels.layer_norm import numba_cuda
    return functools.partial(getattr(numba_cuda, fn), version=version, **launch)


# ------------------------------------------------------------------ layer norm
SHAPES_CPU = [(N, C) for N in (1, 3, 7, 77) for C in (1, 5, 13, 128, 257)]
SHAPES_CUDA = [(1, 1), (7, 13), (3, 257), (77, 5), (2, 128)]   # a few small blocks each
IMPLEMENTATIONS = [("numba_cpu", None)] + [(f"cuda_v{v}", v) for v in (1, 2)]
CASES = [(impl, v, shape) for impl, v in IMPLEMENTATIONS
         for shape in (SHAPES_CPU if v is None else SHAPES_CUDA)]
OUTPUTS = ("y", "mean", "rstd", "dx", "dweight", "dbias")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("impl, version, shape", CASES, ids=[f"{i}-{s[0]}x{s[1]}" for i, _, s in CASES])
def test_layer_norm_matches_reference(impl, version, shape, dtype, cuda_xp):
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    x, weight, bias, dy = make_inputs(rng, *shape, dtype)
    expected = reference.layer_norm_forward(x, weight, bias, EPS)
    expected_grads = reference.layer_norm_backward(dy, x, weight, *expected[1:])

    if version is None:
        forward, backward, xp = numba_cpu.layer_norm_forward, numba_cpu.layer_norm_backward, np
    else:
        forward = cuda_version("layer_norm_forward", version, threads=8)
        backward = cuda_version("layer_norm_backward", version, threads=8, rows_per_block=16)
        xp = cuda_xp
    x_, w_, b_, dy_ = (xp.asarray(a) for a in (x, weight, bias, dy))
    got = forward(x_, w_, b_, EPS)
    got_grads = backward(dy_, x_, w_, xp.asarray(expected[1]), xp.asarray(expected[2]))

    tol = TOLERANCE[dtype]
    assert [a.dtype for a in got + got_grads] == [dtype, np.float64, np.float64, dtype, dtype, dtype]
    for name, g, e in zip(OUTPUTS, got + got_grads, expected + expected_grads):
        assert_close(f"{impl} {name}", g, e, tol)


# ------------------------------------------------------------------ GELU and QuickGELU
GELU_SHAPES = [(1,), (7, 13), (3, 5, 257)]
ACTIVATIONS = ["gelu", "quick_gelu"]
GELU_IMPLEMENTATIONS = ["numba_cpu", "cuda"]


def make_activation_inputs(rng, shape, dtype):
    """Normal values, with the tails (-40, -10, 10, 40: sigmoid and erf saturate) and 0 mixed in."""
    x = 3 * rng.standard_normal(shape)
    flat = x.reshape(-1)
    flat[: min(flat.size, 5)] = [-40.0, 10.0, 0.0, -10.0, 40.0][: min(flat.size, 5)]
    return x.astype(dtype), rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("with_bias", [False, True], ids=["", "bias"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", GELU_SHAPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("impl", GELU_IMPLEMENTATIONS)
def test_activation_matches_reference(impl, activation, shape, dtype, with_bias, cuda_xp):
    rng = np.random.default_rng(len(shape))
    x, dy = make_activation_inputs(rng, shape, dtype)
    bias = rng.standard_normal(shape[-1]).astype(dtype) if with_bias else None
    y = getattr(reference, f"{activation}_forward")(x, bias)
    dx = getattr(reference, f"{activation}_backward")(dy, x, bias)
    if impl == "numba_cpu":
        module, launch, xp = numba_cpu, {}, np
    else:
        from miniclip.kernels.layer_norm import numba_cuda
        module, launch, xp = numba_cuda, dict(threads=16, blocks=4), cuda_xp    # grid-stride: 64 threads
    bias = None if bias is None else xp.asarray(bias)
    got_y = getattr(module, f"{activation}_forward")(xp.asarray(x), bias, **launch)
    got_dx = getattr(module, f"{activation}_backward")(xp.asarray(dy), xp.asarray(x), bias, **launch)
    assert got_y.dtype == dtype and got_dx.dtype == dtype
    assert_close(f"{impl} {activation} y", got_y, y, TOLERANCE[dtype])
    assert_close(f"{impl} {activation} dx", got_dx, dx, TOLERANCE[dtype])


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_reference_activation_with_bias_is_the_activation_of_x_plus_bias(activation):
    rng = np.random.default_rng(11)
    x, dy = make_activation_inputs(rng, (4, 6), np.float64)
    bias = rng.standard_normal(6)
    forward, backward = (getattr(reference, f"{activation}_{d}") for d in ("forward", "backward"))
    assert_close("y", forward(x, bias), forward(x + bias), TORCH_FLOAT64)
    assert_close("dx", backward(dy, x, bias), backward(dy, x + bias), TORCH_FLOAT64)


def test_activation_bias_must_match_the_last_dimension():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="bias"):
        layer_norm.gelu_forward(x, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="bias"):
        layer_norm.quick_gelu_backward(x, x, np.zeros(4, np.float64))


# ------------------------------------------------------------------ reference vs central differences
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (4, 13)])
def test_reference_layer_norm_backward_matches_finite_differences(shape):
    rng = np.random.default_rng(7)
    x, weight, bias, dy = make_inputs(rng, *shape, np.float64)
    _, mean, rstd = reference.layer_norm_forward(x, weight, bias, EPS)
    dx, dweight, dbias = reference.layer_norm_backward(dy, x, weight, mean, rstd)

    def L(x, weight, bias):
        return (dy * reference.layer_norm_forward(x, weight, bias, EPS)[0]).sum()
    eps = GRADCHECK["eps"]
    numeric_dx = numeric_grad(lambda z: L(z, weight, bias), x.copy(), eps)
    numeric_dweight = numeric_grad(lambda w: L(x, w, bias), weight.copy(), eps)
    numeric_dbias = numeric_grad(lambda b: L(x, weight, b), bias.copy(), eps)
    assert_close("dx vs central differences", dx, numeric_dx, GRADCHECK)
    assert_close("dweight vs central differences", dweight, numeric_dweight, GRADCHECK)
    assert_close("dbias vs central differences", dbias, numeric_dbias, GRADCHECK)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_reference_activation_backward_matches_finite_differences(activation):
    rng = np.random.default_rng(8)
    x = 3 * rng.standard_normal((3, 7))
    dy = rng.standard_normal((3, 7))
    forward = getattr(reference, f"{activation}_forward")
    analytic = getattr(reference, f"{activation}_backward")(dy, x)
    numeric = numeric_grad(lambda z: (dy * forward(z)).sum(), x.copy(), GRADCHECK["eps"])
    assert_close(f"{activation} dx vs central differences", analytic, numeric, GRADCHECK)


# ------------------------------------------------------------------ reference vs torch
@pytest.mark.oracle
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (77, 257)])
def test_reference_layer_norm_matches_torch(torch, shape):
    rng = np.random.default_rng(9)
    x, weight, bias, dy = make_inputs(rng, *shape, np.float64)
    y, mean, rstd = reference.layer_norm_forward(x, weight, bias, EPS)
    dx, dweight, dbias = reference.layer_norm_backward(dy, x, weight, mean, rstd)

    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, weight, bias))
    ty = torch.nn.functional.layer_norm(tx, (shape[1],), tw, tb, EPS)
    ty.backward(torch.tensor(dy))
    for name, got, expected in [("y", y, ty), ("dx", dx, tx.grad),
                                ("dweight", dweight, tw.grad), ("dbias", dbias, tb.grad)]:
        assert_close(f"{name} vs torch", got, expected.detach().numpy(), TORCH_FLOAT64)


@pytest.mark.oracle
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_reference_activation_matches_torch(torch, activation):
    rng = np.random.default_rng(10)
    x, dy = make_activation_inputs(rng, (7, 13), np.float64)
    torch_fn = {"gelu": lambda t: torch.nn.functional.gelu(t),      # approximate="none": the erf form
                "quick_gelu": lambda t: t * torch.sigmoid(1.702 * t)}[activation]   # OpenCLIP's QuickGELU
    tx = torch.tensor(x, requires_grad=True)
    ty = torch_fn(tx)
    ty.backward(torch.tensor(dy))
    y = getattr(reference, f"{activation}_forward")(x)
    dx = getattr(reference, f"{activation}_backward")(dy, x)
    assert_close(f"{activation} y vs torch", y, ty.detach().numpy(), TORCH_FLOAT64)
    assert_close(f"{activation} dx vs torch", dx, tx.grad.numpy(), TORCH_FLOAT64)


# ------------------------------------------------------------------ the SIMD erf behind GELU
def test_vectorised_erf_matches_math_erf():
    """numba_cpu.erf (two fitted polynomials and exp_nonpositive) against libm's erf, over a
    dense grid of [-10, 10] (both tails, where erf rounds to +-1), around the interval borders
    |z| = 2 and 6, and at special values. Measured max absolute error: 1.4e-15 (at z ~ -1.99)."""
    import math
    z = np.concatenate([np.linspace(-10.0, 10.0, 400_001),
                        np.linspace(1.999, 2.001, 2001), -np.linspace(1.999, 2.001, 2001),
                        np.linspace(5.999, 6.001, 2001), -np.linspace(5.999, 6.001, 2001),
                        [0.0, -0.0, 1e-300, -5e-324, 30.0, -1e300, np.inf, -np.inf]])
    got = numba_cpu.erf_array(z)
    expected = np.array([math.erf(v) for v in z])
    error = np.abs(got - expected)
    worst = int(error.argmax())
    assert error[worst] < 4e-15, f"erf({z[worst]!r}): expected {expected[worst]!r}, got {got[worst]!r}"
    assert np.isnan(numba_cpu.erf_array(np.array([np.nan])))[0], "erf(nan) must stay nan"
    assert (np.sign(got) == np.sign(z)).all(), "erf must keep the sign of z"


def test_vectorised_float32_erf_matches_math_erf():
    """The float32 erf (one polynomial of degree 16, then +-1 from |z| = 3.92, float32
    arithmetic) on the same grid and around 3.92. Measured max absolute error: 1.7e-7, about
    three float32 roundings of 1."""
    import math
    z = np.concatenate([np.linspace(-10.0, 10.0, 400_001),
                        np.linspace(1.999, 2.001, 2001), -np.linspace(1.999, 2.001, 2001),
                        np.linspace(3.91, 3.93, 2001), -np.linspace(3.91, 3.93, 2001),
                        [0.0, -0.0, 1e-30, -1e-45, 30.0, -1e30, np.inf, -np.inf]]).astype(np.float32)
    got = numba_cpu.erf_array(z)
    assert got.dtype == np.float32
    expected = np.array([math.erf(v) for v in z.astype(np.float64)])
    error = np.abs(got - expected)
    worst = int(error.argmax())
    assert error[worst] < 3e-7, f"erf({z[worst]!r}): expected {expected[worst]!r}, got {got[worst]!r}"
    assert np.isnan(numba_cpu.erf_array(np.array([np.nan], np.float32)))[0], "erf(nan) must stay nan"
    assert (np.sign(got) == np.sign(z)).all(), "erf must keep the sign of z"


# ------------------------------------------------------------------ the public functions
@pytest.mark.parametrize("mode", ["reference", "fast"])
def test_public_functions_dispatch_and_accept_strided_inputs(mode):
    rng = np.random.default_rng(11)
    x3, weight, bias, _ = make_inputs(rng, 12, 26, np.float32)
    x = x3.reshape(2, 6, 26)[:, :, ::2]                  # (2, 6, 13), strided: copied once, inside
    weight, bias = weight[::2], bias[::2]
    dy = rng.standard_normal(x.shape).astype(np.float32)
    flat = np.ascontiguousarray(x).reshape(12, 13)
    y, mean, rstd = reference.layer_norm_forward(flat, weight, bias, EPS)
    dx, dweight, dbias = reference.layer_norm_backward(dy.reshape(12, 13), flat, weight, mean, rstd)
    with kernels.use(mode):
        got_y, got_mean, got_rstd = layer_norm.layer_norm_forward(x, weight, bias, EPS)
        got_dx, got_dweight, got_dbias = layer_norm.layer_norm_backward(dy, x, weight, got_mean, got_rstd)
        got_gelu = layer_norm.gelu_forward(x)
        got_gelu_dx = layer_norm.gelu_backward(dy, x)
        got_quick = layer_norm.quick_gelu_forward(x)
        got_quick_dx = layer_norm.quick_gelu_backward(dy, x)
    assert got_mean.shape == (2, 6) and got_rstd.shape == (2, 6)
    for name, got, expected in [("y", got_y, y.reshape(x.shape)), ("mean", got_mean, mean.reshape(2, 6)),
                                ("rstd", got_rstd, rstd.reshape(2, 6)), ("dx", got_dx, dx.reshape(x.shape)),
                                ("dweight", got_dweight, dweight), ("dbias", got_dbias, dbias),
                                ("gelu", got_gelu, reference.gelu_forward(x)),
                                ("gelu dx", got_gelu_dx, reference.gelu_backward(dy, x)),
                                ("quick_gelu", got_quick, reference.quick_gelu_forward(x)),
                                ("quick_gelu dx", got_quick_dx, reference.quick_gelu_backward(dy, x))]:
        assert_close(name, got, expected, KERNEL_FLOAT32)


def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(12)
    x, weight, bias, dy = make_inputs(rng, 3, 5, np.float32)
    _, mean, rstd = layer_norm.layer_norm_forward(x, weight, bias)
    with pytest.raises(TypeError, match="x: expected a float32 or float64 array"):
        layer_norm.layer_norm_forward(x.astype(np.int32), weight, bias)
    with pytest.raises(TypeError, match="x: expected .* at least 1 dimension"):
        layer_norm.layer_norm_forward(x[0, 0], weight, bias)
    with pytest.raises(ValueError, match=r"x: expected at least one row"):
        layer_norm.layer_norm_forward(x[:, :0], weight[:0], bias[:0])
    with pytest.raises(ValueError, match=r"weight: expected shape \(5,\) dtype float32, got shape \(4,\)"):
        layer_norm.layer_norm_forward(x, weight[:4], bias)
    with pytest.raises(ValueError, match=r"bias: expected shape \(5,\) dtype float32, got .* dtype float64"):
        layer_norm.layer_norm_forward(x, weight, bias.astype(np.float64))
    with pytest.raises(ValueError, match="eps: expected a positive number"):
        layer_norm.layer_norm_forward(x, weight, bias, eps=0.0)
    with pytest.raises(ValueError, match=r"dy: expected shape \(3, 5\)"):
        layer_norm.layer_norm_backward(dy[:2], x, weight, mean, rstd)
    with pytest.raises(ValueError, match="rstd: expected .* float64"):
        layer_norm.layer_norm_backward(dy, x, weight, mean, rstd.astype(np.float32))
    with pytest.raises(TypeError, match="x: expected a float32 or float64 array"):
        layer_norm.gelu_forward(np.arange(3))
    with pytest.raises(ValueError, match=r"dy: expected shape \(3, 5\) dtype float32"):
        layer_norm.quick_gelu_backward(dy.astype(np.float64), x)


# ------------------------------------------------------------------ real GPU
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_public_functions_on_gpu(dtype):
    import cupy
    rng = np.random.default_rng(13)
    x, weight, bias, dy = make_inputs(rng, 4160, 768, dtype)
    y, mean, rstd = reference.layer_norm_forward(x, weight, bias, EPS)
    grads = reference.layer_norm_backward(dy, x, weight, mean, rstd)
    gx, gw, gb, gdy = (cupy.asarray(a) for a in (x, weight, bias, dy))
    got = layer_norm.layer_norm_forward(gx, gw, gb, EPS)
    got_grads = layer_norm.layer_norm_backward(gdy, gx, gw, got[1], got[2])
    for name, g, e in zip(OUTPUTS, got + got_grads, (y, mean, rstd) + grads):
        assert_close(f"gpu {name}", g, e, TOLERANCE[dtype])
    assert_close("gpu gelu", layer_norm.gelu_forward(gx), reference.gelu_forward(x), TOLERANCE[dtype])
    assert_close("gpu quick_gelu dx", layer_norm.quick_gelu_backward(gdy, gx),
                 reference.quick_gelu_backward(dy, x), TOLERANCE[dtype])
