"""Optimizers step for step against torch.optim (AdamW in both kernel modes), exact resume from a state_dict, gradient
clipping against torch, the learning-rate schedules against hand-computed values, and a small
MLP that AdamW must fit. On the CuPy stand-in: AdamW.step is one kernel launch for 3 parameters
or 40, and neither it nor clip_grad_norm reads anything back from the device."""
import math

import numpy as np
import pytest

import miniclip
from miniclip import functional as F
from miniclip import nn, optim
from tests.tolerances import TORCH_FLOAT32, TORCH_FLOAT64

SHAPES = [(3, 5), (7,), ()]          # a matrix, a bias, and a 0-d logit_scale
N_STEPS = 10


def make_parameters(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [nn.Parameter(rng.standard_normal(shape).astype(dtype)) for shape in SHAPES]


def gradient_sequence(dtype, seed=1):
    """One gradient per parameter per step. The bias gets no gradient at step 3 (a parameter
    the loss did not use): both libraries must skip it, moments included."""
    rng = np.random.default_rng(seed)
    steps = []
    for step in range(N_STEPS):
        grads = [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]
        if step == 3:
            grads[1] = None
        steps.append(grads)
    return steps


def groups_of(params, config):
    """The same param_groups layout for miniclip and torch: the matrix in a group of its own,
    the bias and logit_scale in a second group with its own hyper-parameters (no decay)."""
    return [{"params": [params[0]]}, {"params": params[1:], **config.get("second_group", {})}]


def run_both(torch, make_optimizers, config, dtype, tolerance):
    params = make_parameters(dtype)
    torch_params = [torch.tensor(p.data.copy(), requires_grad=True) for p in params]
    kwargs = {k: v for k, v in config.items() if k != "second_group"}
    ours, theirs = make_optimizers(groups_of(params, config), groups_of(torch_params, config), kwargs)
    for step, grads in enumerate(gradient_sequence(dtype)):
        for p, tp, g in zip(params, torch_params, grads):
            p.grad = None if g is None else g.copy()
            tp.grad = None if g is None else torch.tensor(g)
        ours.step()
        theirs.step()
        for index, (p, tp) in enumerate(zip(params, torch_params)):
            assert p.dtype == dtype
            np.testing.assert_allclose(p.data, tp.detach().numpy(), **tolerance,
                                       err_msg=f"parameter {index} {p.shape} after step {step + 1}")


DTYPES = [(np.float32, TORCH_FLOAT32), (np.float64, TORCH_FLOAT64)]

SGD_CONFIGS = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.05, momentum=0.9),
    "momentum_weight_decay": dict(lr=0.05, momentum=0.8, weight_decay=0.01,
                                  second_group=dict(weight_decay=0.0, lr=0.2)),
    "nesterov_weight_decay": dict(lr=0.03, momentum=0.9, weight_decay=0.05, nesterov=True),
}


@pytest.mark.oracle
@pytest.mark.parametrize("dtype, tolerance", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("config", SGD_CONFIGS.values(), ids=SGD_CONFIGS.keys())
def test_sgd_matches_torch_step_for_step(torch, config, dtype, tolerance):
    run_both(torch, lambda ours, theirs, kw: (optim.SGD(ours, **kw), torch.optim.SGD(theirs, **kw)),
             config, dtype, tolerance)


ADAMW_CONFIGS = {
    "defaults": dict(),
    "clip_settings": dict(lr=5e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2,
                          second_group=dict(weight_decay=0.0)),
    "large_lr_small_beta2": dict(lr=0.05, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.5,
                                 second_group=dict(lr=0.01)),
}


@pytest.mark.oracle
@pytest.mark.parametrize("mode", ["fast", "reference"])
@pytest.mark.parametrize("dtype, tolerance", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("config", ADAMW_CONFIGS.values(), ids=ADAMW_CONFIGS.keys())
def test_adamw_matches_torch_step_for_step(torch, config, dtype, tolerance, mode):
    """AdamW.step runs the fused kernel (kernels/adamw): Numba in "fast" mode, the array-operation
    reference in "reference" mode; both must follow torch."""
    with miniclip.kernels.use(mode):
        run_both(torch, lambda ours, theirs, kw: (optim.AdamW(ours, **kw), torch.optim.AdamW(theirs, **kw)),
                 config, dtype, tolerance)


def test_groups_take_the_defaults_they_do_not_set():
    params = make_parameters(np.float32)
    optimizer = optim.AdamW([{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.0}],
                            lr=1e-3, weight_decay=0.2)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.2, 0.0]
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-3]
    assert optimizer.param_groups[1]["betas"] == (0.9, 0.999)
    with pytest.raises(ValueError, match="more than one param group"):
        optim.SGD([{"params": params}, {"params": params[:1]}], lr=0.1)
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)


def test_zero_grad_sets_gradients_to_none():
    params = make_parameters(np.float32)
    for p in params:
        p.grad = np.ones_like(p.data)
    optimizer = optim.SGD(params, lr=0.1)
    optimizer.zero_grad()
    assert all(p.grad is None for p in params)


@pytest.mark.oracle
@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_adamw_follows_a_late_first_gradient_and_a_replaced_array(torch, mode):
    """AdamW keeps parameters as views into its flat buffers: a parameter whose first gradient
    comes at step 3, and one whose array is replaced (as Module.to or .double() do) after step 5,
    must still follow torch."""
    params = make_parameters(np.float32)
    torch_params = [torch.tensor(p.data.copy(), requires_grad=True) for p in params]
    ours, theirs = optim.AdamW(params, lr=0.05, weight_decay=0.1), torch.optim.AdamW(torch_params, lr=0.05,
                                                                                      weight_decay=0.1)
    with miniclip.kernels.use(mode):
        for step, grads in enumerate(gradient_sequence(np.float32)):
            if step == 5:
                params[0].data = params[0].data.copy()
            for index, (p, tp, g) in enumerate(zip(params, torch_params, grads)):
                g = None if index == 2 and step < 2 else g
                p.grad = None if g is None else g.copy()
                tp.grad = None if g is None else torch.tensor(g)
            ours.step()
            theirs.step()
            for index, (p, tp) in enumerate(zip(params, torch_params)):
                np.testing.assert_allclose(p.data, tp.detach().numpy(), **TORCH_FLOAT32,
                                           err_msg=f"parameter {index} {p.shape} after step {step + 1}")


@pytest.mark.parametrize("n_params", [3, 40])
def test_adamw_step_is_one_launch_and_no_transfer_on_the_gpu_path(n_params):
    """On the stand-in, with the Numba CUDA kernels: each step launches one kernel for all the
    parameters (one per parameter before the multi-tensor kernel), and clip_grad_norm and
    AdamW.step read nothing back to the host."""
    from miniclip.kernels.cuda_launch import recording
    from tests import cupy_standin
    with cupy_standin.installed() as standin, miniclip.kernels.use("fast"):
        import cupy
        shapes = (SHAPES * n_params)[:n_params]
        params = [nn.Parameter(cupy.asarray(np.ones(shape, np.float32))) for shape in shapes]
        optimizer = optim.AdamW([{"params": params[::2]}, {"params": params[1::2], "weight_decay": 0.0}])
        launches = []
        for step in range(2):
            for p in params:
                p.grad = cupy.asarray(np.full(p.shape, 0.5 + step, np.float32))
            optim.clip_grad_norm(params, 1.0)
            with recording() as launched:
                optimizer.step()
            launches.append([kernel.__name__ for kernel, *_ in launched])
        assert launches == [["adamw_v3"], ["adamw_v3"]]
        assert standin.total_transfers() == 0, dict(standin.transfers)


def test_adamw_on_the_standin_with_the_cuda_kernel_matches_the_cpu():
    """The multi-tensor kernel launched from AdamW.step on device arrays (the stand-in, run by
    Numba's simulator) gives the CPU optimizer's parameters, both param groups, 3 steps."""
    from tests import cupy_standin
    params = make_parameters(np.float32)
    grads = gradient_sequence(np.float32)[:3]
    cpu = optim.AdamW(groups_of(params, {}), lr=0.05, weight_decay=0.1)
    with cupy_standin.installed(), miniclip.kernels.use("fast"):
        import cupy
        device_params = [nn.Parameter(cupy.asarray(p.data)) for p in params]
        device = optim.AdamW(groups_of(device_params, {}), lr=0.05, weight_decay=0.1)
        for step_grads in grads:
            for p, q, g in zip(params, device_params, step_grads):
                p.grad, q.grad = (None, None) if g is None else (g.copy(), cupy.asarray(g))
            cpu.step()
            device.step()
        for index, (p, q) in enumerate(zip(params, device_params)):
            np.testing.assert_allclose(q.data.get(), p.data, rtol=1e-6, atol=1e-7, err_msg=f"parameter {index}")


@pytest.mark.parametrize("make_optimizer", [
    lambda params: optim.AdamW(params, lr=1e-2, weight_decay=0.1),
    lambda params: optim.SGD(params, lr=1e-2, momentum=0.9, nesterov=True),
], ids=["AdamW", "SGD"])
def test_state_dict_resumes_bit_for_bit(make_optimizer):
    grads = gradient_sequence(np.float32)

    def run(params, optimizer, steps):
        for step_grads in steps:
            for p, g in zip(params, step_grads):
                p.grad = None if g is None else g.copy()
            optimizer.step()

    straight = make_parameters(np.float32)
    run(straight, make_optimizer(straight), grads)

    resumed = make_parameters(np.float32)
    first = make_optimizer(resumed)
    run(resumed, first, grads[:5])
    saved_optimizer = first.state_dict()
    saved_parameters = [p.data.copy() for p in resumed]
    run(resumed, first, grads[5:7])                 # going on must not change what was saved
    for p, data in zip(resumed, saved_parameters):
        p.data[...] = data
    second = make_optimizer(resumed)
    second.param_groups[0]["lr"] = 123.0            # hyper-parameters come back from the save too
    second.load_state_dict(saved_optimizer)
    run(resumed, second, grads[5:])
    for p, q in zip(straight, resumed):
        np.testing.assert_array_equal(p.data, q.data)


def test_load_state_dict_refuses_a_different_layout():
    optimizer = optim.AdamW(make_parameters(np.float32))
    other = optim.AdamW(make_parameters(np.float32)[:2])
    with pytest.raises(ValueError, match="sizes \\[3\\].*\\[2\\]"):
        other.load_state_dict(optimizer.state_dict())


@pytest.mark.oracle
@pytest.mark.parametrize("max_norm", [0.5, 100.0], ids=["clips", "leaves_alone"])
def test_clip_grad_norm_matches_torch(torch, max_norm):
    params = make_parameters(np.float32)
    grads = gradient_sequence(np.float32)[3]         # includes a parameter without a gradient
    torch_params = [torch.tensor(p.data, requires_grad=True) for p in params]
    for p, tp, g in zip(params, torch_params, grads):
        p.grad = None if g is None else g.copy()
        tp.grad = None if g is None else torch.tensor(g)
    total = optim.clip_grad_norm(params, max_norm)
    expected = torch.nn.utils.clip_grad_norm_(torch_params, max_norm)
    assert total == pytest.approx(expected.item(), rel=1e-6)
    assert (total > max_norm) == (max_norm == 0.5)   # the two cases really are different
    for p, tp in zip(params, torch_params):
        if p.grad is not None:
            np.testing.assert_allclose(p.grad, tp.grad.numpy(), **TORCH_FLOAT32)
    assert params[1].grad is None


def test_clip_grad_norm_clips_the_gradient_of_a_0d_parameter_from_backward():
    logit_scale = nn.Parameter(np.array(2.0, np.float32))      # as CLIP's, a 0-d parameter
    (logit_scale * 30.0 + 1.0).backward()
    total = optim.clip_grad_norm([logit_scale], 3.0)
    assert total == pytest.approx(30.0)
    assert float(logit_scale.grad) == pytest.approx(3.0, rel=1e-6)


def test_clip_grad_norm_of_a_single_tensor():
    p = nn.Parameter(np.zeros(2, np.float32))
    p.grad = np.array([3.0, 4.0], np.float32)
    assert optim.clip_grad_norm(p, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad, [0.6, 0.8], rtol=1e-6)


def test_cosine_schedule_with_warmup():
    optimizer = optim.SGD(make_parameters(np.float32), lr=0.0)
    schedule = optim.cosine_lr(optimizer, base_lr=1.0, warmup_length=4, steps=14)
    expected = {0: 0.25, 1: 0.5, 3: 1.0,              # linear warmup: (step + 1) / 4
                4: 1.0,                                # cosine starts at its top
                9: 0.5,                                # halfway through the 10 cosine steps
                6: 0.5 * (1 + math.cos(math.pi * 2 / 10)),
                13: 0.5 * (1 + math.cos(math.pi * 9 / 10))}
    for step, lr in expected.items():
        assert schedule(step) == pytest.approx(lr, abs=1e-15), step
        assert optimizer.param_groups[0]["lr"] == schedule(step)
    with pytest.raises(ValueError, match="warmup_length < steps"):
        optim.cosine_lr(optimizer, 1.0, warmup_length=10, steps=10)


def test_constant_schedule_with_warmup_sets_every_group():
    params = make_parameters(np.float32)
    optimizer = optim.AdamW([{"params": params[:1]}, {"params": params[1:], "lr": 5.0}])
    schedule = optim.const_lr(optimizer, base_lr=2e-3, warmup_length=5, steps=100)
    assert schedule(0) == pytest.approx(4e-4)
    assert schedule(2) == pytest.approx(1.2e-3)
    assert schedule(4) == schedule(5) == schedule(99) == 2e-3
    assert [g["lr"] for g in optimizer.param_groups] == [2e-3, 2e-3]


def two_spirals(n_per_class, rng):
    t = np.sqrt(rng.uniform(0, 1, n_per_class)) * 3 * np.pi
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * np.pi)
    points = np.concatenate([arm, -arm]) + 0.02 * rng.standard_normal((2 * n_per_class, 2))
    return points.astype(np.float32), np.repeat([0, 1], n_per_class)


def test_adamw_fits_two_spirals():
    """A straight line cannot separate two interleaved spirals: only a working backward
    through the layers and a working AdamW bring the loss from ln 2 to near 0."""
    miniclip.manual_seed(0)
    points, labels = two_spirals(100, np.random.default_rng(0))
    model = nn.Sequential(nn.Linear(2, 32), nn.GELU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 2))
    optimizer = optim.AdamW(model.parameters(), lr=2e-2, weight_decay=1e-4)
    x = miniclip.tensor(points)
    losses = []
    for _ in range(300):
        loss = F.cross_entropy(model(x), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 0.6                               # about ln 2 at the start
    assert losses[-1] < 0.05, losses[::30]
    with miniclip.no_grad():
        accuracy = (model(x).data.argmax(axis=1) == labels).mean()
    assert accuracy == 1.0


@pytest.mark.gpu
def test_a_training_step_on_the_gpu_matches_the_cpu():
    """Module.to('cuda'), backward, clip_grad_norm, AdamW and both state_dicts on CuPy arrays."""
    miniclip.manual_seed(0)
    points, labels = two_spirals(50, np.random.default_rng(0))
    models = [nn.Sequential(nn.Linear(2, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 2)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    models[1].to("cuda")
    optimizers = [optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1) for m in models]
    for model, optimizer, device in zip(models, optimizers, ["cpu", "cuda"]):
        for _ in range(3):
            loss = F.cross_entropy(model(miniclip.tensor(points).to(device)), labels)
            optimizer.zero_grad()
            loss.backward()
            optim.clip_grad_norm(model.parameters(), 1.0)
            optimizer.step()
    assert all(p.device == "cuda" for p in models[1].parameters())
    cpu, gpu = models[0].state_dict(), models[1].state_dict()
    for key in cpu:
        np.testing.assert_allclose(gpu[key], cpu[key], rtol=1e-4, atol=1e-5, err_msg=key)
    restored = optim.AdamW(models[1].parameters())
    restored.load_state_dict(optimizers[0].state_dict())     # CPU state onto GPU parameters
    assert all(miniclip.backend.is_cupy_array(s["exp_avg"]) for s in restored.state.values())
