"""The prepared GPU check: every GPU measurement miniclip needs, in one call of under 8 minutes.

    bash tests/gpu_check.sh              # on a machine with an NVIDIA GPU (installs, then this)
    bash tests/gpu_check.sh --dry-run    # anywhere: every step on the CuPy stand-in (CI runs it)

Steps, each a subprocess with its own time limit, each writing one JSON line to
$OUT/gpu_check.jsonl ({"step", "ok", "seconds", ...}) and its output to $OUT/gpu_check.log:

1. versions    driver, CUDA runtime, CuPy, NumPy, Numba, numba-cuda, the GPU's name, and whether
               torch, open_clip and pytest-xdist are there (the steps below say what they skip)
2. kernels     the CUDA kernel tests on the device (MINICLIP_REAL_GPU=1): every test that takes
               the `cuda_xp` fixture (it runs on CuPy arrays), every test marked `gpu`, and every
               test with "cuda" in its id; pytest_collection_modifyitems below picks them. They run
               in the background beside the training steps, and end before the benchmarks start
3. train-*     20 steps of `python -m miniclip.train --device cuda` per mode (fp32, siglip, amp,
               amp_bf16, accum-freq 2) and, at the same time, 5 steps of the same run on the CPU:
               the first 5 losses must agree within LOSS_RTOL (float32 sums in another order:
               2e-3 relative; 16-bit products: 2e-2)
4. bench-*     `bench step --device cuda` for ViT-B-32 at batch 256, fp32 and amp, with OpenCLIP
               on torch beside it when both are installed (the JSON line says when they are not)
5. edge-cases  attention with B x H = 65,536 (a grid axis capped at 65,535 would fail) and the
               CLIP loss at B = 16,384, against float64 references

Each step's time limit is cut so that every later step keeps RESERVE_SECONDS of the budget.

--dry-run runs the same steps on the stand-in (tests/cupy_standin) with the NumPy reference
kernels, at sizes a CPU runs in seconds (the kernel tests are only collected, and the collection
must not be empty), so that the first minute on a real GPU is never spent finding a typo in this
script. It checks the plumbing, not the GPU.
"""
import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

BUDGET_SECONDS = 470           # the whole check stays under 8 minutes
RESERVE_SECONDS = 15           # kept for each step still to run when a step's limit is set
TRAIN_MODES = {
    "fp32": [],
    "siglip": ["--siglip"],
    "amp": ["--precision", "amp"],
    "amp_bf16": ["--precision", "amp_bf16"],
    "accum2": ["--accum-freq", "2"],
}
LOSS_RTOL = {"fp32": 2e-3, "siglip": 2e-3, "amp": 2e-2, "amp_bf16": 2e-2, "accum2": 2e-3}
COMPARED_LOSSES = 5
# Edge cases vs float64: float32 sums over up to 16,384 terms, so 10x KERNEL_FLOAT32's 1e-5 (a wrong
# grid or index is off by O(1)); attention's error is absolute, its values are O(1).
EDGE_RTOL = 1e-4


class Check:
    """Runs the steps, keeps the time budget and writes the JSON lines and the log."""

    def __init__(self, out, dry_run):
        self.out, self.dry_run = out, dry_run
        self.started = time.monotonic()
        self.results = []
        self.steps_to_come = 0
        self.background = []                # (started command, deadline, then): see start_background
        os.makedirs(out, exist_ok=True)
        shutil.rmtree(os.path.join(out, "runs"), ignore_errors=True)   # an earlier check's runs would be appended to
        open(os.path.join(out, "gpu_check.jsonl"), "w").close()
        self.log = open(os.path.join(out, "gpu_check.log"), "w")

    def seconds_left(self):
        return BUDGET_SECONDS - (time.monotonic() - self.started)

    def limit(self, timeout):
        """A step's time limit: its own, cut so that each step still to come keeps its reserve."""
        return min(timeout, max(self.seconds_left() - RESERVE_SECONDS * self.steps_to_come, 5))

    def python(self, *args, on_device=True):
        """The command line of `python ARGS`; in a dry run, device commands go through the stand-in."""
        if on_device and self.dry_run:
            return [sys.executable, "-m", "tests.cupy_standin.run", *args]
        return [sys.executable, *args]

    def environment(self, env=None):
        environment = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        if self.dry_run:
            environment.update(MINICLIP_KERNELS="reference", NUMBA_ENABLE_CUDASIM="1")
            environment.pop("MINICLIP_REAL_GPU", None)
        return environment

    def start(self, step, command, env=None):
        """Start one command, its output to a temporary file; finish() waits for it and logs it."""
        self.say(f"\n=== {step}: {' '.join(command)}")
        output = tempfile.TemporaryFile("w+")
        process = subprocess.Popen(command, env=self.environment(env), stdout=output, stderr=subprocess.STDOUT,
                                   text=True, start_new_session=True)   # a timeout ends its children too
        return step, process, output, time.monotonic()

    def finish(self, started, timeout):
        """Wait for a started command (killed after `timeout` s from now); returns (ok, output, seconds)."""
        step, process, output_file, start = started
        try:
            ok = process.wait(timeout=timeout) == 0
            ending = ""
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            ok, ending = False, f"\ntimed out after {time.monotonic() - start:.0f} s"
        output_file.seek(0)
        output = output_file.read() + ending
        output_file.close()
        seconds = time.monotonic() - start
        self.say(output.rstrip() + f"\n=== {step}: {'ok' if ok else 'FAILED'} in {seconds:.1f} s")
        return ok, output, seconds

    def start_background(self, step, command, timeout, env, then):
        """Start a command that runs beside the next steps; wait_background() calls then(ok, output, seconds)."""
        self.background.append((self.start(step, command, env), time.monotonic() + self.limit(timeout), then))

    def wait_background(self):
        """Wait for the background commands (each killed at its deadline) and record them."""
        while self.background:
            started, deadline, then = self.background.pop(0)
            then(*self.finish(started, max(deadline - time.monotonic(), 1)))

    def run(self, step, command, timeout, env=None):
        """Run one command, log its output; returns (ok, output, seconds)."""
        return self.finish(self.start(step, command, env), self.limit(timeout))

    def record(self, step, ok, seconds, **details):
        line = {"step": step, "ok": bool(ok), "seconds": round(seconds, 1), "dry_run": self.dry_run, **details}
        self.results.append(line)
        with open(os.path.join(self.out, "gpu_check.jsonl"), "a") as f:
            f.write(json.dumps(line) + "\n")
        print(json.dumps(line), flush=True)

    def say(self, text):
        self.log.write(text + "\n")
        self.log.flush()


# ---- the steps -----------------------------------------------------------------------------------
def versions(check):
    ok, output, seconds = check.run("versions", check.python("-m", "tests.gpu_check", "versions"), timeout=60)
    lines = [line for line in output.splitlines() if line.startswith("{")]
    info = json.loads(lines[-1]) if lines else {}
    if not check.dry_run:
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
            info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as error:
            info["nvidia_smi"] = f"failed: {error}"
    check.record("versions", ok and bool(info), seconds, **info)


def package_version(name):
    """A distribution's version, or why there is none."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def print_versions():
    """One JSON line: what this machine runs miniclip with (each item is tried on its own, so one
    missing piece does not hide the others; on the stand-in the CUDA figures are 0 and its name)."""
    import platform
    info = {"python": platform.python_version()}
    for name in ("numpy", "numba", "numba-cuda", "cupy-cuda13x", "cupy-cuda12x", "torch", "open_clip_torch",
                 "pytest", "pytest-xdist", "mpi4py"):
        info[name] = package_version(name)
    try:
        import cupy
        runtime = cupy.cuda.runtime
        info["cupy"] = cupy.__version__
        info["cuda_runtime"] = runtime.runtimeGetVersion()
        info["cuda_driver"] = runtime.driverGetVersion()
        name = runtime.getDeviceProperties(0)["name"]
        info["gpu"] = name.decode() if isinstance(name, bytes) else name
    except Exception as error:               # said in the JSON line: the step then fails
        info["cupy_error"] = f"{type(error).__name__}: {error}"
    print(json.dumps(info))
    return 1 if "cupy_error" in info else 0


KERNEL_TEST_PATHS = ["tests/kernels", "tests/functional", "tests/test_amp.py", "tests/test_optim.py",
                     "tests/distributed"]


def pytest_collection_modifyitems(config, items):
    """With `-p tests.gpu_check`: keep the tests that run CUDA code on a device (see step 2)."""
    keep, drop = [], []
    for item in items:
        on_device = ("cuda_xp" in getattr(item, "fixturenames", ()) or item.get_closest_marker("gpu") is not None
                     or "cuda" in item.nodeid.lower())
        (keep if on_device else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def kernel_tests(check):
    """The CUDA kernel tests on the device, started in the background: they run beside the training
    steps (neither is timed) and are waited for before the benchmarks. A dry run collects the same
    selection (the simulator already runs these tests in CI) and checks that it is not empty."""
    selection = [*KERNEL_TEST_PATHS, "-p", "tests.gpu_check", "-q", "-p", "no:cacheprovider", "--maxfail=20"]
    if check.dry_run:
        selection.append("--collect-only")
    elif has_modules("xdist"):
        selection += ["-n", "8"]                    # numba compiles each kernel on the CPU: 8 at a time
    env = {} if check.dry_run else {"MINICLIP_REAL_GPU": "1", "MINICLIP_REQUIRE_ORACLE": "0"}
    check.start_background("kernels", check.python("-m", "pytest", *selection, on_device=False), timeout=240,
                           env=env, then=lambda *result: record_kernel_tests(check, *result))


PYTEST_COUNTS = re.compile(r"(\d+)(?:/\d+)?(?: tests?)? (passed|failed|skipped|deselected|collected|errors?)")


def record_kernel_tests(check, ok, output, seconds):
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    counts = {word: int(number) for number, word in PYTEST_COUNTS.findall(summary)}
    ok = ok and (counts.get("collected", 0) > 0 if check.dry_run else counts.get("passed", 0) > 0)
    check.record("kernels", ok, seconds, summary=summary, **counts)


def first_losses(metrics_path, count):
    """The loss of the first `count` training steps logged in a run's metrics.jsonl."""
    losses = []
    with open(metrics_path) as f:
        for line in f:
            record = json.loads(line)
            if "loss" in record and "step" in record and len(losses) < count:
                losses.append(record["loss"])
    return losses


# The dry run's model: small enough that a stand-in run takes seconds (tests/training/conftest.py).
DRY_RUN_MODEL = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def model_flags(check):
    """The default model on a GPU; the tiny one, written under $OUT, in a dry run."""
    if not check.dry_run:
        return []
    path = os.path.join(check.out, "dry_run_model.json")
    with open(path, "w") as f:
        json.dump(DRY_RUN_MODEL, f)
    return ["--model", path]


def train(check, mode):
    """The GPU run and the CPU run of one mode, at the same time (separate processes), then their
    first losses compared."""
    steps, samples, batch = (20, 5120, 128) if not check.dry_run else (3, 48, 16)
    logs = os.path.join(check.out, "runs")
    common = ["-m", "miniclip.train", "--logs", logs, "--seed", "0", "--no-progress", *model_flags(check),
              "--batch-size", str(batch), "--train-num-samples", str(samples),
              "--val-num-samples", "64", "--zeroshot-num-samples", "36", *TRAIN_MODES[mode]]
    compared = min(COMPARED_LOSSES, steps)
    limit = check.limit(90)
    on_gpu = check.start(f"train-{mode}", check.python(
        *common, "--device", "cuda", "--max-steps", str(steps), "--name", f"{mode}-cuda"))
    on_cpu = check.start(f"train-{mode}-cpu", check.python(
        *common, "--device", "cpu", "--max-steps", str(compared), "--name", f"{mode}-cpu", on_device=False))
    ok_gpu, _, seconds = check.finish(on_gpu, limit)
    ok_cpu, _, cpu_seconds = check.finish(on_cpu, max(limit - seconds, 1))
    details = {"steps": steps, "ok_gpu": ok_gpu, "ok_cpu": ok_cpu, "cpu_seconds": round(cpu_seconds, 1),
               "rtol": LOSS_RTOL[mode]}
    ok = ok_gpu and ok_cpu
    if ok:
        gpu = first_losses(os.path.join(logs, f"{mode}-cuda", "metrics.jsonl"), compared)
        cpu = first_losses(os.path.join(logs, f"{mode}-cpu", "metrics.jsonl"), compared)
        worst = max(abs(g - c) / abs(c) for g, c in zip(gpu, cpu)) if gpu and len(gpu) == len(cpu) else float("inf")
        ok = worst <= LOSS_RTOL[mode]
        details.update(gpu_losses=gpu, cpu_losses=cpu, worst_relative_difference=worst)
    check.record(f"train-{mode}", ok, seconds, **details)


def bench(check, precision):
    check.wait_background()                 # the benchmarks have the GPU to themselves
    if check.dry_run:
        model, batch, steps, warmup = model_flags(check)[1], 4, 1, 1
    else:
        model, batch, steps, warmup = "ViT-B-32", 256, 5, 2
    path = os.path.join(check.out, "bench_step.jsonl")
    command = ["-m", "miniclip.bench", "step", "--device", "cuda", "--model", model, "--batch", str(batch),
               "--precision", precision, "--steps", str(steps), "--warmup", str(warmup), "--json", path]
    missing = [name for name in ("torch", "open_clip") if not has_modules(name)]
    if not check.dry_run and not missing:
        command.append("--vs-openclip")
    ok, output, seconds = check.run(f"bench-{precision}", check.python(*command), timeout=120)
    openclip = ("not run in a dry run" if check.dry_run else
                f"not run: {' and '.join(missing)} not installed" if missing else "beside miniclip")
    check.record(f"bench-{precision}", ok, seconds, model=os.path.basename(model), batch=batch, openclip=openclip,
                 table=[line for line in output.splitlines() if "|" in line or "step" in line.lower()][-8:])


def has_modules(*names):
    """Whether every module is installed (found, not imported: torch takes seconds to import)."""
    return all(importlib.util.find_spec(name) is not None for name in names)


def edge_cases(check):
    scale = ["--small"] if check.dry_run else []
    ok, output, seconds = check.run("edge-cases", check.python("-m", "tests.gpu_check", "edge-cases", *scale),
                                    timeout=90)
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    check.record("edge-cases", ok and bool(lines) and all(line["ok"] for line in lines), seconds, cases=lines)


# ---- the edge cases, run in a process of their own (on the device, or on the stand-in) ---------
def run_edge_cases(small):
    """Attention over B x H = 65,536 heads and the CLIP loss at B = 16,384 on the device; each
    compared with its float64 reference (attention on a few heads fetched to the host, the loss on
    the device). Prints one JSON line per case."""
    import cupy as xp
    from miniclip.kernels import attention, softmax_xent
    from miniclip.kernels.attention import reference as attention_reference
    from miniclip.kernels.softmax_xent import reference as xent_reference

    rng = np.random.default_rng(0)
    batch, heads, T, D = (4, 16, 8, 16) if small else (1024, 64, 16, 32)
    q, k, v, do = (xp.asarray(rng.standard_normal((batch, heads, T, D), dtype=np.float32)) for _ in range(4))
    o, lse = attention.attention_forward(q, k, v, D ** -0.5, is_causal=True)
    dq, dk, dv = attention.attention_backward(q, k, v, o, lse, do, D ** -0.5, is_causal=True)
    picked = (0, batch - 1)                       # the first and the last batch entries: every head
    on_host = [x[list(picked)].get().astype(np.float64) for x in (q, k, v, do)]
    o64, lse64 = attention_reference.attention_forward(*on_host[:3], D ** -0.5, is_causal=True)
    grads64 = attention_reference.attention_backward(*on_host[:3], o64, lse64, on_host[3], D ** -0.5, is_causal=True)
    errors = [np.abs(got[list(picked)].get() - want).max() for got, want in zip((o, dq, dk, dv), (o64, *grads64))]
    print(json.dumps({"case": "attention", "batch_times_heads": batch * heads, "max_abs_error": float(max(errors)),
                      "ok": bool(max(errors) < EDGE_RTOL)}), flush=True)

    B = 512 if small else 16384
    sims = rng.uniform(-1, 1, (B, B)).astype(np.float32)
    logits = xp.asarray(sims) * 20.0
    loss, lse_row, lse_col = softmax_xent.clip_loss_forward(logits)
    dlogits, _ = softmax_xent.clip_loss_backward(logits, lse_row, lse_col, 1.0)
    logits64 = logits.astype(xp.float64)
    loss64, row64, col64 = xent_reference.clip_loss_forward(logits64)
    dlogits64, _ = xent_reference.clip_loss_backward(logits64, row64, col64, 1.0)
    loss_error = abs(float(loss) - float(loss64)) / abs(float(loss64))
    grad_error = float(xp.abs(dlogits.astype(xp.float64) - dlogits64).max() / xp.abs(dlogits64).max())
    print(json.dumps({"case": "clip_loss", "batch": B, "loss_relative_error": loss_error,
                      "dlogits_relative_error": grad_error,
                      "ok": loss_error < EDGE_RTOL and grad_error < EDGE_RTOL}), flush=True)


def steps(check):
    """The planned steps, in order: (name, function of no arguments)."""
    planned = [("versions", lambda: versions(check)), ("kernels", lambda: kernel_tests(check))]
    planned += [(f"train-{mode}", lambda mode=mode: train(check, mode)) for mode in TRAIN_MODES]
    planned += [(f"bench-{p}", lambda p=p: bench(check, p)) for p in ("fp32", "amp")]
    planned += [("edge-cases", lambda: edge_cases(check))]
    return planned


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("what", nargs="?", default="all", choices=("all", "versions", "edge-cases"),
                        help="all: every step (the other two are steps' own processes)")
    parser.add_argument("--dry-run", action="store_true", help="every step on the CuPy stand-in, small sizes")
    parser.add_argument("--small", action="store_true", help="edge-cases: small sizes (for the dry run)")
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp/gpu_check"), help="where the JSON lines go")
    args = parser.parse_args(argv)
    if args.what == "versions":
        return print_versions()
    if args.what == "edge-cases":
        return run_edge_cases(args.small)

    check = Check(args.out, args.dry_run)
    planned = steps(check)
    for index, (name, step) in enumerate(planned):
        check.steps_to_come = len(planned) - index - 1
        if check.seconds_left() < 10:
            check.record(name, False, 0.0, skipped="out of the time budget")
            continue
        try:
            step()
        except Exception as error:              # a broken step is reported, and the next one runs
            check.record(name, False, 0.0, error=f"{type(error).__name__}: {error}")
    check.wait_background()
    failed = [r["step"] for r in check.results if not r["ok"]]
    total = time.monotonic() - check.started
    print(f"gpu_check: {len(check.results) - len(failed)} passed, {len(failed)} failed in {total:.0f} s"
          + (f" (failed: {', '.join(failed)})" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
