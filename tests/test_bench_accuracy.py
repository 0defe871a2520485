"""python -m miniclip.bench accuracy (miniclip/bench_accuracy.py): float32 gradients against float64.

The rule (../shared/DESIGN.md): miniclip's float32 error against float64 truth is at most 10x
PyTorch's on the same case, for every parameter whose true gradient is not zero and every op's
output and gradients, measured on the float32 run's side of every ReLU kink (over a sweep of
random draws, the worst error per parameter on each side).

rn_stem_float32.npz is the stem of the case of issue 18 (../shared/cases/rn_stem_float32.npz,
a ModifiedResNet at 64 px, layers [1, 1, 1, 1], width 16): its config, images 3 and 4 and their
token rows, and the stem's weights (conv1, bn1, conv2, bn2); the rest of the model is miniclip's
seed-0 init. Conv2's output at (1, 5, 6, 3) is -3.49e-8 in float64, a sum of 72 products that
cancels; with 2 OpenBLAS threads the float32 GEMM gave +7.45e-9 there, and the stem's gradients
were 9e-3 off float64 (torch: 3e-6). Which side of 0 a float32 sum lands on depends on the BLAS's
blocking (its threads, its CPU kernels), so the test puts that float32 value there itself.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import miniclip
from miniclip import bench, bench_accuracy
from miniclip.kernels import conv2d as conv2d_kernels
from miniclip.models import create_model, load_config, model_tensors

CASE = Path(__file__).parent / "rn_stem_float32.npz"
FLIP_INDEX, FLIP_VALUE32 = (1, 5, 6, 3), 7.45e-9            # conv2's output (= ReLU call 1's input)
MAX_RATIO = 10

TINY_VIT = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16,
                                            "patch_size": 8},
            "text_cfg": {"context_length": 12, "vocab_size": 300, "width": 32, "heads": 2, "layers": 1}}
TINY_RN = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 32,
                                           "patch_size": None},
           "text_cfg": {"context_length": 12, "vocab_size": 300, "width": 32, "heads": 2, "layers": 1}}


def stem_case():
    z = np.load(CASE)
    config = load_config(json.loads(str(z["config"])))
    miniclip.manual_seed(0)
    state = model_tensors(create_model(config))
    state.update({k[3:]: z[k] for k in z.files if k.startswith("sd/")})
    return bench_accuracy.Draw(config, state, z["img"], z["txt"], "rn_stem_float32")


def assert_within_torch(rows, where):
    worst = [(name, ours, theirs) for name, ours, theirs in rows if bench_accuracy.ratio(ours, theirs) > MAX_RATIO]
    assert not worst, f"{where}: float32 error more than {MAX_RATIO}x torch's (name, miniclip, torch): {worst}"


@pytest.mark.parametrize("reduce", ["sum", "mean", "broadcast gradient"])
def test_float32_sums_over_many_values_round_once(reduce):
    """miniclip/ops accumulates float32 sums in float64 (reduction.py; arithmetic.py's sum_to_shape,
    the gradient of a broadcast operand such as a batch norm's bias): over (N, H, W) of values
    around 10 the result is within half an ulp of exact. NumPy's float32 accumulation, adding one
    row after another, was 2.5 ulps off, and batch norm's weight gradient up to 14x torch's error."""
    x = (10 + np.random.default_rng(0).standard_normal((64, 16, 32, 32))).astype(np.float32)
    exact = x.astype(np.float64).sum((0, 2, 3))
    if reduce == "broadcast gradient":
        bias = miniclip.tensor(np.zeros((1, 16, 1, 1), np.float32), requires_grad=True)
        (miniclip.tensor(np.zeros_like(x)) + bias).backward(miniclip.tensor(x))
        got = bias.grad.reshape(16)
    else:
        got = getattr(miniclip.tensor(x), reduce)((0, 2, 3)).data
        exact = exact / (x.size // 16) if reduce == "mean" else exact
    assert got.dtype == np.float32
    assert (np.abs(got - exact) <= np.spacing(got) / 2).all()


def test_a_bias_gradient_over_many_rows_keeps_float32_accuracy():
    """functional/linear.py's sum_rows (a linear's bias gradient) adds 512-row blocks' BLAS sums in
    float64: within 4 unit roundoffs over 2^18 rows; the one matrix-vector product over all rows it
    replaced was 8e-6 off here (70 roundoffs), and 11-27x torch's error on 16,640-262,144 rows."""
    x = (1 + np.random.default_rng(0).standard_normal((2 ** 18, 16))).astype(np.float32)
    got = sys.modules["miniclip.functional.linear"].sum_rows(x)
    assert got.dtype == np.float32
    assert bench_accuracy.max_rel_error(got, x.astype(np.float64).sum(axis=0)) < 4 * 2.0 ** -24


def test_bias_gradient_by_blocks_runs_on_the_device_path():
    """The same blocks on CuPy arrays (the strict stand-in): no host array, no transfer."""
    from tests import cupy_standin
    x = np.random.default_rng(1).standard_normal((1300, 7)).astype(np.float32)
    with cupy_standin.installed() as standin:
        import cupy
        got = sys.modules["miniclip.functional.linear"].sum_rows(cupy.asarray(x))
        assert standin.total_transfers() == 0
        got = got.get()
    np.testing.assert_allclose(got, x.astype(np.float64).sum(axis=0), rtol=1e-6, atol=1e-5)


def test_kink_flips_name_each_relu_call_with_a_sign_change():
    a = np.array([[1.0, -2e-9, 3.0], [0.0, 5e-9, -1.0]], np.float32)
    b = np.array([[1.0, 1e-9, 3.0], [-1e-9, 5e-9, -1.0]])
    flip, = bench_accuracy.kink_flips([b, a], [b, b])
    assert (flip.call, flip.shape, flip.count, flip.index) == (1, (2, 3), 1, (0, 1))
    assert (flip.value32, flip.value64) == (pytest.approx(-2e-9), pytest.approx(1e-9))


def test_replayed_relu_decisions_give_the_masks_function():
    x = miniclip.tensor(np.array([-1.0, 2.0, 3.0, -4.0]), requires_grad=True)
    with bench_accuracy.relu_decisions(replay=[np.array([True, False, True, False])]) as inputs:
        y = miniclip.functional.relu(x)
    y.sum().backward()
    np.testing.assert_array_equal(y.data, [-1.0, 0.0, 3.0, 0.0])
    np.testing.assert_array_equal(x.grad, [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(inputs[0], x.data)
    assert miniclip.functional.relu is miniclip.ops.relu                     # restored on exit


def test_one_flipped_kink_moves_the_stem_gradients_far_more_than_rounding():
    """float64 on the other side of the near-zero ReLU input: the stem's gradients move by ~1e-2
    of their size, three orders above float32's rounding error."""
    case = stem_case()
    plain, relu64 = bench_accuracy.miniclip_gradients(case, np.float64)
    assert -1e-7 < relu64[1][FLIP_INDEX] < 0
    masks = [x > 0 for x in relu64]
    masks[1][FLIP_INDEX] = True
    flipped, _ = bench_accuracy.miniclip_gradients(case, np.float64, replay=masks)
    assert bench_accuracy.max_rel_error(flipped["visual.conv2.weight"], plain["visual.conv2.weight"]) > 1e-3


@pytest.fixture
def conv2_flipped(monkeypatch):
    """The float32 stem conv2 (8 -> 8 channels) returns what 2 OpenBLAS threads gave at FLIP_INDEX."""
    forward = conv2d_kernels.conv2d_forward

    def as_with_two_threads(x, w, b, stride, padding):
        y = forward(x, w, b, stride, padding)
        if y.dtype == np.float32 and w.shape == (8, 8, 3, 3):
            y[FLIP_INDEX] = FLIP_VALUE32
        return y
    monkeypatch.setattr(conv2d_kernels, "conv2d_forward", as_with_two_threads)


@pytest.mark.oracle
def test_shared_case_kink_is_reported_and_the_same_branch_is_within_10x_torch(torch, open_clip, conv2_flipped, capsys):
    report = bench_accuracy.model_report(stem_case(), oracle=(torch, open_clip))
    flip = next(f for f in report.flips if f.call == 1)
    assert (flip.index, flip.count) == (FLIP_INDEX, 1) and flip.value64 < 0 < flip.value32
    name, plain_error = report.plain_worst
    assert name.startswith("visual.") and plain_error > 1e-3                 # the kink, seen
    # Any other flip (another BLAS may round another near-zero input across) is a near tie too.
    assert all(abs(f.value64) < 1e-5 for f in report.flips + report.torch_flips)
    assert_within_torch(report.rows, "rn_stem_float32")
    assert {"visual.conv1.weight", "visual.conv2.weight", "visual.bn1.weight"} <= {r[0] for r in report.rows}
    bench_accuracy.print_model_report(report)
    assert "kink flip (miniclip): ReLU call 1 (2, 8, 32, 32)" in capsys.readouterr().out


@pytest.mark.oracle
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("config", [TINY_VIT, TINY_RN], ids=["vit", "rn"])
def test_float32_gradients_within_10x_torch_over_seeds(torch, open_clip, config, train):
    """Per parameter, the worst error over 4 draws (one draw's scalar can be lucky: torch's
    logit_scale gradient was 5.6e-9 off on one, a tenth of float32's unit roundoff)."""
    reports = [bench_accuracy.model_report(bench_accuracy.draw(load_config(config), seed, batch=4), train,
                                           (torch, open_clip)) for seed in range(4)]
    assert all(len(report.rows) > 10 for report in reports)
    assert_within_torch(bench_accuracy.worst_over_draws(reports), "worst over seeds 0-3")


@pytest.mark.oracle
def test_every_op_and_kernel_mode_within_10x_torch(torch):
    rows = [row for op in bench_accuracy.OPS for row in bench_accuracy.op_rows(op, torch)]
    assert {(name, mode) for name, mode, *_ in rows} == {(op.name, mode) for op in bench_accuracy.OPS
                                                         for mode in ("fast", "reference")}
    assert_within_torch([(f"{op} {mode} {out}", ours, theirs) for op, mode, out, ours, theirs in rows], "ops")


def test_cli_measures_a_config_file_without_torch(tmp_path, capsys):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY_RN))
    bench.main(["accuracy", "--model", str(path), "--seeds", "1", "--batch", "3", "--no-ops", "--no-torch"])
    out = capsys.readouterr().out
    assert "seed 0: float32 parameter gradients" in out and "visual.conv1.weight" in out


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--batch", "1"], "--batch at least 2"),
    (["--model", "no-such-model"], "unknown model 'no-such-model'"),
    (["--case", "missing.npz"], "missing.npz"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_cli_usage_errors_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["accuracy", "--no-ops", "--no-torch"] + argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
