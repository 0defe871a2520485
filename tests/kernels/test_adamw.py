"""miniclip.kernels.adamw: every implementation against reference.py, the reference against torch.

- One test body runs each implementation (numba_cpu, each numba_cuda version) for several steps
  on the same arrays as the reference (float32 and float64, odd sizes, a 0-d parameter, weight
  decay on and off) and compares param and both moments after every step. CUDA versions run in
  Numba's simulator with small blocks (and, for v2, a grid small enough that its threads loop).
- The reference (and numba_cpu) run step for step next to torch.optim.AdamW (marker oracle).
- The multi-tensor step (adamw_multi_step: tensors in flat buffers, each with its own step and
  hyper-parameters) against the single-tensor reference on each tensor, in every implementation;
  v3 equal bit for bit to v2 in the simulator; one launch per step for 3 tensors or 40.
"""
import functools

import numpy as np
import pytest

import miniclip.kernels
from miniclip.backend import to_numpy
from miniclip.kernels import adamw
from miniclip.kernels.adamw import Segment, numba_cpu, numba_cuda, reference
from miniclip.kernels.cuda_launch import recording
from tests.tolerances import KERNEL_FLOAT32, TORCH_FLOAT32, TORCH_FLOAT64

# A float64 kernel and the float64 reference differ only by rounding order.
TOLERANCE = {np.float32: KERNEL_FLOAT32, np.float64: TORCH_FLOAT64}
TORCH_TOLERANCE = {np.float32: TORCH_FLOAT32, np.float64: TORCH_FLOAT64}

HYPERPARAMETERS = [
    dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1),
    dict(lr=3e-2, beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=0.0),
]
CPU_SHAPES = [(7,), (13, 5), (3, 1, 11), (), (1,), (0,)]
SIMULATOR_SHAPES = [(5,), (3, 7), ()]

CPU_IMPLEMENTATIONS = {"numba_cpu": numba_cpu.adamw_step}
CUDA_IMPLEMENTATIONS = {   # small blocks in the simulator; v2's 2 blocks of 8 threads loop over 21 elements
    "cuda_v1": functools.partial(numba_cuda.adamw_step_v1, threads=8),
    "cuda_v2": functools.partial(numba_cuda.adamw_step_v2, threads=8, max_blocks=2),
}
GPU_IMPLEMENTATIONS = {"cuda_v1": numba_cuda.adamw_step_v1, "cuda_v2": numba_cuda.adamw_step_v2,
                       "cuda_v2[2 blocks]": functools.partial(numba_cuda.adamw_step_v2, max_blocks=2)}


def make_state(shape, dtype, seed=0):
    """param, exp_avg, exp_avg_sq as after a few steps (non-zero moments, v >= 0), and 5 gradients."""
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(shape)
    exp_avg = 0.1 * rng.standard_normal(shape)
    exp_avg_sq = 0.01 * rng.uniform(0.1, 1.0, shape)
    grads = [rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 30.0], shape) for _ in range(5)]
    as_array = (lambda a: np.asarray(a, dtype=dtype))          # shape () gives NumPy scalars: make them 0-d arrays
    return as_array(param), as_array(exp_avg), as_array(exp_avg_sq), [as_array(g) for g in grads]


def assert_close(name, got, expected, rtol, atol):
    """assert_allclose, plus the worst element's index and values, for a readable failure."""
    got, expected = to_numpy(got), to_numpy(expected)
    if got.size:
        excess = np.abs(got.astype(np.float64) - expected) - (atol + rtol * np.abs(expected))
        worst = np.unravel_index(np.argmax(np.nan_to_num(excess, nan=np.inf)), excess.shape)
        name = f"{name}: worst at index {worst}: expected {expected[worst]!r}, got {got[worst]!r}"
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=name)


def check_against_reference(step_fn, shape, dtype, hyper, xp):
    param, exp_avg, exp_avg_sq, grads = make_state(shape, dtype)
    expected = [param.copy(), exp_avg.copy(), exp_avg_sq.copy()]
    state = [xp.asarray(a.copy()) for a in (param, exp_avg, exp_avg_sq)]
    for step, grad in enumerate(grads, start=1):
        reference.adamw_step(expected[0], grad, expected[1], expected[2], step, **hyper)
        step_fn(state[0], xp.asarray(grad), state[1], state[2], step, **hyper)
        for name, got, want in zip(("param", "exp_avg", "exp_avg_sq"), state, expected):
            assert got.dtype == dtype, f"{name} has dtype {got.dtype}, expected {np.dtype(dtype)}"
            assert_close(f"{name} after step {step}, shape {shape}, {np.dtype(dtype)}", got, want, **TOLERANCE[dtype])


@pytest.mark.parametrize("hyper", HYPERPARAMETERS, ids=["decay", "no_decay"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", CPU_SHAPES, ids=str)
@pytest.mark.parametrize("implementation", CPU_IMPLEMENTATIONS)
def test_cpu_implementation_matches_reference(implementation, shape, dtype, hyper):
    check_against_reference(CPU_IMPLEMENTATIONS[implementation], shape, dtype, hyper, np)


@pytest.mark.parametrize("hyper", HYPERPARAMETERS, ids=["decay", "no_decay"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SIMULATOR_SHAPES, ids=str)
@pytest.mark.parametrize("implementation", CUDA_IMPLEMENTATIONS)
def test_cuda_version_matches_reference(implementation, shape, dtype, hyper, cuda_xp):
    check_against_reference(CUDA_IMPLEMENTATIONS[implementation], shape, dtype, hyper, cuda_xp)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", CPU_SHAPES + [(1000, 999)], ids=str)
@pytest.mark.parametrize("implementation", GPU_IMPLEMENTATIONS)
def test_cuda_version_matches_reference_at_full_size(implementation, shape, dtype, cuda_xp):
    check_against_reference(GPU_IMPLEMENTATIONS[implementation], shape, dtype, HYPERPARAMETERS[0], cuda_xp)


@pytest.mark.parametrize("implementation", ["reference", *CPU_IMPLEMENTATIONS, *CUDA_IMPLEMENTATIONS])
def test_strided_arrays_are_updated_in_place(implementation, cuda_xp):
    """A transposed parameter (and its moments) is updated where it lives, not in a lost copy."""
    step_fn = reference.adamw_step if implementation == "reference" else \
        {**CPU_IMPLEMENTATIONS, **CUDA_IMPLEMENTATIONS}[implementation]
    xp = cuda_xp if implementation in CUDA_IMPLEMENTATIONS else np
    param, exp_avg, exp_avg_sq, grads = make_state((4, 3), np.float64)
    expected = [param.copy(), exp_avg.copy(), exp_avg_sq.copy()]
    reference.adamw_step(expected[0], grads[0], expected[1], expected[2], 1, **HYPERPARAMETERS[0])
    strided = [xp.asarray(a.T.copy()).T for a in (param, exp_avg, exp_avg_sq)]     # same values, transposed views
    assert not strided[0].flags.c_contiguous
    step_fn(strided[0], xp.asarray(grads[0]), strided[1], strided[2], 1, **HYPERPARAMETERS[0])
    for name, got, want in zip(("param", "exp_avg", "exp_avg_sq"), strided, expected):
        assert_close(name, got, want, **TORCH_FLOAT64)


@pytest.mark.oracle
@pytest.mark.parametrize("hyper", HYPERPARAMETERS, ids=["decay", "no_decay"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("implementation", ["reference", *CPU_IMPLEMENTATIONS])
def test_matches_torch_adamw_step_for_step(implementation, dtype, hyper, torch):
    step_fn = reference.adamw_step if implementation == "reference" else CPU_IMPLEMENTATIONS[implementation]
    param, _, _, grads = make_state((17, 3), dtype)
    grads = grads * 2                                       # 10 steps
    exp_avg, exp_avg_sq = np.zeros_like(param), np.zeros_like(param)
    tparam = torch.tensor(param.copy(), requires_grad=True)
    optimizer = torch.optim.AdamW([tparam], lr=hyper["lr"], betas=(hyper["beta1"], hyper["beta2"]),
                                  eps=hyper["eps"], weight_decay=hyper["weight_decay"], foreach=False)
    for step, grad in enumerate(grads, start=1):
        step_fn(param, grad, exp_avg, exp_avg_sq, step, **hyper)
        tparam.grad = torch.tensor(grad)
        optimizer.step()
        state = optimizer.state[tparam]
        for name, got, want in zip(("param", "exp_avg", "exp_avg_sq"), (param, exp_avg, exp_avg_sq),
                                   (tparam, state["exp_avg"], state["exp_avg_sq"])):
            assert_close(f"{name} after step {step}", got, want.detach().numpy(), **TORCH_TOLERANCE[dtype])


def test_dispatch_follows_the_kernel_mode(monkeypatch):
    calls = []
    for module in (reference, numba_cpu):
        name = module.__name__.split(".")[-1]
        monkeypatch.setattr(module, "adamw_step", lambda *args, _name=name: calls.append(_name))
    x = np.ones(3)
    adamw.adamw_step(x, x, x, x, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)
    with miniclip.kernels.use("reference"):
        adamw.adamw_step(x, x, x, x, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)
    assert calls == ["numba_cpu", "reference"]


@pytest.mark.parametrize("change, error, message", [
    (lambda p, g, m, v: ((p.astype(np.int64), g, m, v), {}), TypeError, "param has dtype int64"),
    (lambda p, g, m, v: ((p, g[:2], m, v), {}), ValueError, r"grad has shape \(2,\); expected param's \(3,\)"),
    (lambda p, g, m, v: ((p, g, m, v.astype(np.float32)), {}), TypeError, "exp_avg_sq has dtype float32"),
    (lambda p, g, m, v: ((p, g, m, v), {"step": 0}), ValueError, "step must be an int >= 1"),
    (lambda p, g, m, v: ((p, g, m, v), {"beta2": 1.0}), ValueError, "betas must be in"),
])
@pytest.mark.parametrize("implementation", ["dispatch", "reference", "numba_cuda"])
def test_bad_inputs_raise_clear_errors(change, error, message, implementation):
    step_fn = {"dispatch": adamw.adamw_step, "reference": reference.adamw_step,
               "numba_cuda": numba_cuda.adamw_step}[implementation]
    arrays, overrides = change(*(np.ones(3) for _ in range(4)))
    kwargs = dict(step=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0) | overrides
    with pytest.raises(error, match=message):
        step_fn(*arrays, **kwargs)


# --- the multi-tensor step -------------------------------------------------------------------------

MULTI_IMPLEMENTATIONS = {   # in the simulator: chunks of 4 elements, blocks of 2 threads, a grid of 3 blocks that loops
    "reference": reference.adamw_multi_step, "numba_cpu": numba_cpu.adamw_multi_step,
    "cuda_v3": functools.partial(numba_cuda.adamw_multi_step, threads=2, max_blocks=3, chunk_size=4),
}
MULTI_SHAPES = [(3, 5), (7,), (), (0,), (2, 2)]


def flat_model(shapes, dtype, seed=0):
    """Flat param and moment buffers holding one tensor per shape, with a gap of 2 elements after
    each (which no segment covers and no step may change), and each tensor's offset."""
    offsets, total = [], 0
    for shape in shapes:
        offsets.append(total)
        total += int(np.prod(shape)) + 2
    param, exp_avg, exp_avg_sq, _ = make_state((total,), dtype, seed)
    return param, exp_avg, exp_avg_sq, offsets


def multi_step_segments(shapes, offsets, step):
    """Segments for one step: tensor 1 sits out step 2 (no gradient), tensor 0's step count runs 3
    ahead (as after a resume), the tensors alternate between two hyper-parameter sets; the
    gradients are packed in reverse order, so grad offsets differ from param offsets."""
    sizes = [int(np.prod(shape)) for shape in shapes]
    present = [i for i in range(len(shapes)) if not (i == 1 and step == 2)]
    grad_offsets, position = {}, 0
    for i in reversed(present):
        grad_offsets[i], position = position, position + sizes[i]
    return [Segment(offsets[i], grad_offsets[i], sizes[i], step + (3 if i == 0 else 0) - (i == 1 and step > 2),
                    **HYPERPARAMETERS[i % 2]) for i in present], position


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("implementation", MULTI_IMPLEMENTATIONS)
def test_multi_step_matches_the_reference_on_each_tensor(implementation, dtype, cuda_xp):
    xp = cuda_xp if implementation == "cuda_v3" else np
    param, exp_avg, exp_avg_sq, offsets = flat_model(MULTI_SHAPES, dtype)
    expected = [param.copy(), exp_avg.copy(), exp_avg_sq.copy()]
    state = [xp.asarray(a.copy()) for a in (param, exp_avg, exp_avg_sq)]
    rng = np.random.default_rng(1)
    for step in range(1, 5):
        segments, grad_size = multi_step_segments(MULTI_SHAPES, offsets, step)
        grad = rng.standard_normal(grad_size).astype(dtype)
        for s in segments:
            own = slice(s.offset, s.offset + s.size)
            reference.adamw_step(expected[0][own], grad[s.grad_offset:s.grad_offset + s.size], expected[1][own],
                                 expected[2][own], s.step, s.lr, s.beta1, s.beta2, s.eps, s.weight_decay)
        MULTI_IMPLEMENTATIONS[implementation](*state[:1], xp.asarray(grad), *state[1:], segments)
        for name, got, want in zip(("param", "exp_avg", "exp_avg_sq"), state, expected):
            assert_close(f"{name} after step {step}, {np.dtype(dtype)}", got, want, **TOLERANCE[dtype])
    untouched = np.ones(param.size, bool)
    for offset, shape in zip(offsets, MULTI_SHAPES):
        untouched[offset:offset + int(np.prod(shape))] = False
    np.testing.assert_array_equal(to_numpy(state[0])[untouched], param[untouched], err_msg="a gap was written")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_multi_tensor_v3_equals_v2_bit_for_bit(dtype):
    """The same arithmetic in the same order: v3 on flat buffers gives v2's bits on each tensor
    (in the simulator; on a GPU the compiler may contract differently, see the reference test)."""
    param, exp_avg, exp_avg_sq, offsets = flat_model(MULTI_SHAPES, dtype)
    segments, grad_size = multi_step_segments(MULTI_SHAPES, offsets, 3)
    grad = np.random.default_rng(1).standard_normal(grad_size).astype(dtype)
    per_tensor = [a.copy() for a in (param, exp_avg, exp_avg_sq)]
    for s in segments:
        own = slice(s.offset, s.offset + s.size)
        numba_cuda.adamw_step_v2(per_tensor[0][own], grad[s.grad_offset:s.grad_offset + s.size], per_tensor[1][own],
                                 per_tensor[2][own], s.step, s.lr, s.beta1, s.beta2, s.eps, s.weight_decay,
                                 threads=8, max_blocks=2)
    MULTI_IMPLEMENTATIONS["cuda_v3"](param, grad, exp_avg, exp_avg_sq, segments)
    for name, got, want in zip(("param", "exp_avg", "exp_avg_sq"), (param, exp_avg, exp_avg_sq), per_tensor):
        np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.parametrize("n_tensors", [3, 40])
def test_one_launch_per_multi_step_however_many_tensors(n_tensors):
    """v3 launches once for all tensors; v2, one tensor at a time, once per tensor."""
    shapes = [(5, 3), (7,), ()] * (n_tensors // 3) + [(4,)] * (n_tensors % 3)
    param, exp_avg, exp_avg_sq, offsets = flat_model(shapes, np.float32)
    segments, grad_size = multi_step_segments(shapes, offsets, 1)
    grad = np.ones(grad_size, np.float32)
    with recording() as multi:
        numba_cuda.adamw_multi_step(param, grad, exp_avg, exp_avg_sq, segments)
    with recording() as one_by_one:
        for s in segments:
            own = slice(s.offset, s.offset + s.size)
            numba_cuda.adamw_step(param[own], grad[s.grad_offset:s.grad_offset + s.size], exp_avg[own],
                                  exp_avg_sq[own], s.step, s.lr, s.beta1, s.beta2, s.eps, s.weight_decay)
    assert [kernel for kernel, *_ in multi] == [numba_cuda.adamw_v3]
    assert len(one_by_one) == n_tensors


@pytest.mark.parametrize("implementation", MULTI_IMPLEMENTATIONS)
def test_multi_step_refuses_a_segment_outside_the_buffers(implementation):
    x = np.ones(6)
    segment = Segment(4, 0, 3, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)
    with pytest.raises(ValueError, match=r"segment 0 \(4, 0, 3\) is outside param \(6\)"):
        MULTI_IMPLEMENTATIONS[implementation](x, x.copy(), x.copy(), x.copy(), [segment])


# --- the CUDA kernels compile for a real GPU -----------------------------------------------------

COMPILE_FOR_SM90 = """
import numpy as np
from numba import typeof
from miniclip.kernels.adamw import numba_cuda
from tests.kernels.test_attention import compile_to_ptx
for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
    signature = (typeof(np.zeros(1, dtype)),) * 4 + (typeof(dtype.type(1)),) * 7
    tables = (typeof(np.zeros((1, 2), np.int64)), typeof(np.zeros((1, 3), np.int64)), typeof(np.zeros((1, 7), dtype)),
              typeof(np.int64(1)))
    compile_to_ptx(dtype, {"adamw_v1": (numba_cuda.adamw_v1, signature), "adamw_v2": (numba_cuda.adamw_v2, signature),
                           "adamw_v3": (numba_cuda.adamw_v3, signature[:4] + tables)})
"""


@pytest.mark.slow
def test_cuda_kernels_compile_for_a_real_gpu():
    """Compile every version for sm_90 with NVVM: the simulator accepts code the CUDA compiler
    rejects (the helpers live in test_attention.py)."""
    from tests.kernels.test_attention import run_compile_check
    run_compile_check(COMPILE_FOR_SM90)
