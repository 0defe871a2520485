"""miniclip.kernels.softmax_xent: every implementation against reference.py, and reference.py
against float64 central differences and torch.

One test body per kernel runs numba_cpu and every numba_cuda version (in Numba's simulator here,
on CuPy arrays on a real GPU) on irregular shapes, float32 and float64, rows of +-1e4 logits and
targets at the first and last class.
"""
import functools
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from miniclip import kernels
from miniclip.kernels import softmax_xent
from miniclip.kernels.softmax_xent import cupy_raw, numba_cpu, reference
from tests.kernels.helpers import assert_close, numeric_grad
from tests.tolerances import GRADCHECK, KERNEL_FLOAT32, TORCH_FLOAT64

NVCC = shutil.which("nvcc") or next(
    (p for p in ["/usr/local/bin/nvcc", "/usr/local/cuda/bin/nvcc"] if os.path.exists(p)), None)

# Same formulas, different summation orders: float64 results agree to a few roundings.
TOLERANCE = {np.float32: KERNEL_FLOAT32, np.float64: TORCH_FLOAT64}


@pytest.fixture(scope="module", autouse=True)
def fast_simulator():
    """The simulator runs each CUDA thread as a Python thread, and every barrier waits for the
    interpreter's switch interval (5 ms): a shorter one makes the CUDA tests ~10x faster."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(interval)


def make_logits(rng, N, C, dtype):
    """Rows cycle through: around +1e4 (a naive exp overflows), normal, around -1e4 (a naive
    sum underflows to 0), a mix of +1e4 and -1e4; targets hit the first and the last class."""
    x = 3 * rng.standard_normal((N, C))
    for i in range(N):
        if i % 4 == 0:
            x[i] += 1e4
        elif i % 4 == 2:
            x[i] -= 1e4
        elif i % 4 == 3:
            x[i] += 1e4 * rng.choice([-1, 1], C)
    targets = rng.integers(0, C, N)
    targets[0] = 0
    targets[-1] = C - 1
    return x.astype(dtype), targets


def cuda_version(fn, version, **launch):
    """A numba_cuda wrapper pinned to one version, with small blocks for the simulator."""
    from miniclip.kernels.softmax_xent import numba_cuda
    return functools.partial(getattr(numba_cuda, fn), version=version, **launch)


# ------------------------------------------------------------------ softmax_xent
SHAPES_CPU = [(N, C) for N in (1, 3, 7, 77) for C in (1, 5, 13, 128, 257)]
SHAPES_CUDA = [(1, 1), (7, 13), (3, 257), (77, 5), (2, 128)]   # a few small blocks each
IMPLEMENTATIONS = [("numba_cpu", None)] + [(f"cuda_v{v}", v) for v in (1, 2, 3)]
CASES = [(impl, v, shape) for impl, v in IMPLEMENTATIONS
         for shape in (SHAPES_CPU if v is None else SHAPES_CUDA)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("impl, version, shape", CASES, ids=[f"{i}-{s[0]}x{s[1]}" for i, _, s in CASES])
def test_softmax_xent_matches_reference(impl, version, shape, dtype, cuda_xp):
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    x, t = make_logits(rng, *shape, dtype)
    dy = rng.standard_normal(shape[0]).astype(dtype)
    loss, lse = reference.softmax_xent_forward(x, t)
    dx = reference.softmax_xent_backward(x, t, lse, dy)

    if version is None:
        forward, backward, xp = numba_cpu.softmax_xent_forward, numba_cpu.softmax_xent_backward, np
    else:
        forward = cuda_version("softmax_xent_forward", version, threads=16)
        backward = cuda_version("softmax_xent_backward", version, threads=16)
        xp = cuda_xp
    got_loss, got_lse = forward(xp.asarray(x), xp.asarray(t))
    got_dx = backward(xp.asarray(x), xp.asarray(t), xp.asarray(lse), xp.asarray(dy))

    tol = TOLERANCE[dtype]
    assert got_loss.dtype == dtype and got_lse.dtype == np.float64 and got_dx.dtype == dtype
    assert_close(f"{impl} loss", got_loss, loss, tol)
    assert_close(f"{impl} lse", got_lse, lse, tol)
    assert_close(f"{impl} dlogits", got_dx, dx, tol)


# ------------------------------------------------------------------ clip_loss
CLIP_SIZES_CPU = [1, 2, 7, 13, 77, 128]
CLIP_SIZES_CUDA = [1, 7, 13]     # v2 with 13 rows: two tiles, one of them partial
CLIP_IMPLEMENTATIONS = [("numba_cpu", None)] + [(f"cuda_v{v}", v) for v in (1, 2)]
CLIP_CASES = [(impl, v, B) for impl, v in CLIP_IMPLEMENTATIONS
              for B in (CLIP_SIZES_CPU if v is None else CLIP_SIZES_CUDA)]


def make_clip_inputs(rng, B, dtype, scale):
    """sims = I T^T of unit vectors, logits = scale * sims; scale = 1e4 makes rows of +-1e4."""
    features = rng.standard_normal((2, B, 8))
    features /= np.linalg.norm(features, axis=-1, keepdims=True)
    sims = features[0] @ features[1].T                                   # (B, B)
    return (scale * sims).astype(dtype), sims.astype(dtype)


@pytest.mark.parametrize("scale", [14.3, 1e4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("impl, version, B", CLIP_CASES, ids=[f"{i}-B{b}" for i, _, b in CLIP_CASES])
def test_clip_loss_matches_reference(impl, version, B, dtype, scale, cuda_xp):
    rng = np.random.default_rng(B)
    S, sims = make_clip_inputs(rng, B, dtype, scale)
    dy = 0.7
    loss, lse_row, lse_col = reference.clip_loss_forward(S)
    dS, dscale = reference.clip_loss_backward(S, lse_row, lse_col, dy, sims)

    if version is None:
        forward, backward, xp = numba_cpu.clip_loss_forward, numba_cpu.clip_loss_backward, np
    else:
        forward = cuda_version("clip_loss_forward", version, threads=8)
        backward = cuda_version("clip_loss_backward", version, threads=8, blocks=4)
        xp = cuda_xp
    got = forward(xp.asarray(S))
    got_dS, got_dscale = backward(xp.asarray(S), xp.asarray(lse_row), xp.asarray(lse_col), dy, xp.asarray(sims))
    no_dscale = backward(xp.asarray(S), xp.asarray(lse_row), xp.asarray(lse_col), dy)

    tol = TOLERANCE[dtype]
    assert got[0].shape == () and got[0].dtype == dtype and got_dscale.dtype == dtype
    for name, g, e in zip(("loss", "lse_row", "lse_col"), got, (loss, lse_row, lse_col)):
        assert_close(f"{impl} {name}", g, e, tol)
    assert_close(f"{impl} dlogits", got_dS, dS, tol)
    assert_close(f"{impl} dscale", got_dscale, dscale, tol)
    assert no_dscale[1] is None
    assert_close(f"{impl} dlogits without sims", no_dscale[0], dS, tol)


# ------------------------------------------------------------------ the SIMD exp and max behind numba_cpu
@pytest.mark.parametrize("dtype, bound", [(np.float32, 2e-7), (np.float64, 1e-15)])
def test_simd_exp_matches_numpy_exp(dtype, bound):
    """numba_cpu.exp_nonpositive in each precision against float64 np.exp, over a dense grid of
    [EXP_MIN, 0] (both ends of every range reduction interval); 0 below EXP_MIN, NaN stays NaN.
    Measured max relative error: 1e-7 in float32, 5e-16 in float64."""
    from numba import njit

    @njit
    def exp_all(d):
        out = np.empty_like(d)
        for k in range(d.size):
            out[k] = numba_cpu.exp_nonpositive(d[k])
        return out
    d = np.linspace(numba_cpu.EXP_MIN, 0.0, 400_001).astype(dtype)
    expected = np.exp(d.astype(np.float64))
    error = np.abs(exp_all(d) - expected) / expected
    worst = int(error.argmax())
    assert error[worst] < bound, \
        f"exp({d[worst]!r}): expected {expected[worst]!r}, relative error {error[worst]:.1e}"
    special = exp_all(np.array([0.0, -0.0, -100.0, -np.inf, np.nan], dtype))
    assert special[:4].tolist() == [1.0, 1.0, 0.0, 0.0] and np.isnan(special[4])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_simd_maximum_propagates_nan(dtype):
    """numba_cpu.maximum is llvm.maximum: a NaN anywhere in a row makes its max (and lse) NaN."""
    from numba import njit

    @njit
    def row_max(x):
        m = x[0]
        for j in range(x.size):
            m = numba_cpu.maximum(m, x[j])
        return m
    x = np.arange(100, dtype=dtype)
    assert row_max(x) == 99
    x[37] = np.nan
    assert np.isnan(row_max(x))
    loss, lse = numba_cpu.softmax_xent_forward(x[None, :], np.array([0]))
    assert np.isnan(lse[0]) and np.isnan(loss[0])


# ------------------------------------------------------------------ reference vs central differences
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (7, 13)])
def test_reference_softmax_xent_backward_matches_finite_differences(shape):
    rng = np.random.default_rng(1)
    x = 3 * rng.standard_normal(shape)
    t = rng.integers(0, shape[1], shape[0])
    dy = rng.standard_normal(shape[0])            # not all ones: each row weighted differently
    _, lse = reference.softmax_xent_forward(x, t)
    analytic = reference.softmax_xent_backward(x, t, lse, dy)

    def L(z):
        return (dy * reference.softmax_xent_forward(z, t)[0]).sum()
    numeric = numeric_grad(L, x.copy(), GRADCHECK["eps"])
    assert_close("dlogits vs central differences", analytic, numeric, GRADCHECK)


@pytest.mark.parametrize("B", [1, 2, 7])
def test_reference_clip_loss_backward_matches_finite_differences(B):
    rng = np.random.default_rng(2)
    S, sims = make_clip_inputs(rng, B, np.float64, 5.0)
    dy = -1.3
    _, lse_row, lse_col = reference.clip_loss_forward(S)
    dS, dscale = reference.clip_loss_backward(S, lse_row, lse_col, dy, sims)
    numeric = numeric_grad(lambda z: dy * reference.clip_loss_forward(z)[0], S.copy(), GRADCHECK["eps"])
    assert_close("dlogits vs central differences", dS, numeric, GRADCHECK)
    scale = np.array([5.0])

    def L_scale(s):
        return dy * reference.clip_loss_forward(s[0] * sims)[0]
    numeric_scale = numeric_grad(L_scale, scale, GRADCHECK["eps"])
    assert_close("dscale vs central differences", dscale, numeric_scale[0], GRADCHECK)


# ------------------------------------------------------------------ reference vs torch
@pytest.mark.oracle
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (77, 257)])
def test_reference_softmax_xent_matches_torch(torch, shape):
    rng = np.random.default_rng(3)
    x, t = make_logits(rng, *shape, np.float64)
    dy = rng.standard_normal(shape[0])
    loss, lse = reference.softmax_xent_forward(x, t)
    dx = reference.softmax_xent_backward(x, t, lse, dy)

    tx = torch.tensor(x, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(tx, torch.tensor(t), reduction="none")
    tloss.backward(torch.tensor(dy))
    assert_close("loss vs torch", loss, tloss.detach().numpy(), TORCH_FLOAT64)
    assert_close("lse vs torch", lse, torch.logsumexp(tx, dim=1).detach().numpy(), TORCH_FLOAT64)
    assert_close("dlogits vs torch", dx, tx.grad.numpy(), TORCH_FLOAT64)


@pytest.mark.oracle
@pytest.mark.parametrize("B, scale", [(1, 14.3), (7, 14.3), (128, 100.0), (13, 1e4)])
def test_reference_clip_loss_matches_torch(torch, B, scale):
    """Against OpenCLIP's ClipLoss written in torch: logits = scale * I T^T, two cross-entropies."""
    rng = np.random.default_rng(4)
    _, sims = make_clip_inputs(rng, B, np.float64, 1.0)
    S = scale * sims
    loss, lse_row, lse_col = reference.clip_loss_forward(S)
    dS, dscale = reference.clip_loss_backward(S, lse_row, lse_col, 1.0, sims)

    F = torch.nn.functional
    tscale = torch.tensor(scale, dtype=torch.float64, requires_grad=True)
    tS = tscale * torch.tensor(sims)
    tS.retain_grad()
    labels = torch.arange(B)
    tloss = (F.cross_entropy(tS, labels) + F.cross_entropy(tS.T, labels)) / 2
    tloss.backward()
    assert_close("loss vs torch", loss, tloss.detach().numpy(), TORCH_FLOAT64)
    assert_close("dlogits vs torch", dS, tS.grad.numpy(), TORCH_FLOAT64)
    assert_close("dscale vs torch", dscale, tscale.grad.numpy(), TORCH_FLOAT64)


# ------------------------------------------------------------------ the public functions
@pytest.mark.parametrize("mode", ["reference", "fast"])
def test_public_functions_dispatch_and_accept_strided_inputs(mode):
    rng = np.random.default_rng(5)
    wide, _ = make_logits(rng, 7, 26, np.float32)
    x = wide[:, ::2]                                    # a strided view: copied once, inside
    t = rng.integers(0, 13, 7)
    dy = rng.standard_normal(7).astype(np.float32)
    loss, lse = reference.softmax_xent_forward(np.ascontiguousarray(x), t)
    dx = reference.softmax_xent_backward(np.ascontiguousarray(x), t, lse, dy)
    S, sims = make_clip_inputs(rng, 9, np.float64, 20.0)
    St = S.T                                            # a transposed view, not C-contiguous
    clip = reference.clip_loss_forward(np.ascontiguousarray(St))
    dS, dscale = reference.clip_loss_backward(np.ascontiguousarray(St), clip[1], clip[2], 2.0, sims)
    with kernels.use(mode):
        got_loss, got_lse = softmax_xent.softmax_xent_forward(x, t.astype(np.int32))
        got_dx = softmax_xent.softmax_xent_backward(x, t, got_lse, dy)
        got_clip = softmax_xent.clip_loss_forward(St)
        got_dS, got_dscale = softmax_xent.clip_loss_backward(St, *got_clip[1:], 2.0, sims)
    assert_close("loss", got_loss, loss, KERNEL_FLOAT32)
    assert_close("lse", got_lse, lse, KERNEL_FLOAT32)
    assert_close("dlogits", got_dx, dx, KERNEL_FLOAT32)
    for name, g, e in zip(("clip loss", "lse_row", "lse_col"), got_clip, clip):
        assert_close(name, g, e, TORCH_FLOAT64)
    assert_close("clip dlogits", got_dS, dS, TORCH_FLOAT64)
    assert_close("dscale", got_dscale, dscale, TORCH_FLOAT64)


def test_bad_inputs_raise_clear_errors():
    x = np.zeros((3, 5), np.float32) + np.arange(5, dtype=np.float32)
    t = np.array([0, 4, 2])
    _, lse = softmax_xent.softmax_xent_forward(x, t)
    dy = np.ones(3, np.float32)
    with pytest.raises(TypeError, match="logits.*2-D float32 or float64"):
        softmax_xent.softmax_xent_forward(x.astype(np.int64), t)
    with pytest.raises(TypeError, match="logits.*2-D"):
        softmax_xent.softmax_xent_forward(x[None], t)
    with pytest.raises(ValueError, match="logits.*at least one"):
        softmax_xent.softmax_xent_forward(x[:, :0], t)
    with pytest.raises(ValueError, match=r"targets.*\[0, 5\).*max 5"):
        softmax_xent.softmax_xent_forward(x, np.array([0, 5, 1]))
    with pytest.raises(ValueError, match=r"targets.*min -1"):
        softmax_xent.softmax_xent_forward(x, np.array([0, -1, 1]))
    with pytest.raises(TypeError, match="targets.*integer"):
        softmax_xent.softmax_xent_forward(x, t.astype(np.float32))
    with pytest.raises(TypeError, match=r"targets.*shape \(3,\)"):
        softmax_xent.softmax_xent_forward(x, t[:2])
    with pytest.raises(ValueError, match="lse.*float64"):
        softmax_xent.softmax_xent_backward(x, t, lse.astype(np.float32), dy)
    with pytest.raises(ValueError, match=r"dy.*shape \(3,\) dtype float32"):
        softmax_xent.softmax_xent_backward(x, t, lse, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="clip_loss.*square"):
        softmax_xent.clip_loss_forward(x)
    S = np.eye(3)
    _, lse_row, lse_col = softmax_xent.clip_loss_forward(S)
    with pytest.raises(ValueError, match="sims.*shape"):
        softmax_xent.clip_loss_backward(S, lse_row, lse_col, 1.0, np.eye(4))
    with pytest.raises(ValueError, match="dy.*0-d"):
        softmax_xent.clip_loss_backward(S, lse_row, lse_col, np.ones(3))


# ------------------------------------------------------------------ CUDA C
@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_cupy_raw_source_compiles_with_nvcc(dtype_name, tmp_path):
    source = tmp_path / f"softmax_xent_{dtype_name}.cu"
    source.write_text(cupy_raw.source_for(dtype_name))
    result = subprocess.run([NVCC, "-c", str(source), "-o", str(tmp_path / "out.o")],
                            capture_output=True, text=True)
    assert result.returncode == 0, f"nvcc failed on cupy_raw.SOURCE ({dtype_name}):\n{result.stderr}"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (77, 257), (1000, 4099)])
def test_cupy_raw_and_public_functions_on_gpu(shape, dtype):
    import cupy
    rng = np.random.default_rng(6)
    x, t = make_logits(rng, *shape, dtype)
    dy = rng.standard_normal(shape[0]).astype(dtype)
    loss, lse = reference.softmax_xent_forward(x, t)
    dx = reference.softmax_xent_backward(x, t, lse, dy)
    gx, gt, gdy = cupy.asarray(x), cupy.asarray(t), cupy.asarray(dy)
    for name, module in [("cupy_raw", cupy_raw), ("dispatch", softmax_xent)]:
        forward, backward = module.softmax_xent_forward, module.softmax_xent_backward
        got_loss, got_lse = forward(gx, gt)
        assert_close(f"{name} loss", got_loss, loss, TOLERANCE[dtype])
        assert_close(f"{name} lse", got_lse, lse, TOLERANCE[dtype])
        assert_close(f"{name} dlogits", backward(gx, gt, cupy.asarray(lse), gdy), dx, TOLERANCE[dtype])
