"""The device lane: miniclip's `--device cuda` commands on the strict CuPy stand-in (tests/cupy_standin),
each in a process of its own started through `python -m tests.cupy_standin.run`."""
import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_config(layers=1):
    """A CLIP small enough for seconds per run; `layers` blocks in each tower."""
    return {"embed_dim": 32,
            "vision_cfg": {"image_size": 16, "layers": layers, "width": 32, "head_width": 16, "patch_size": 8},
            "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": layers}}


def write_config(folder, layers=1):
    path = os.path.join(folder, f"tiny_{layers}_layers.json")
    with open(path, "w") as f:
        json.dump(tiny_config(layers), f)
    return path


def train_flags(logs, model, steps=2):
    """A quick run on the built-in shapes data: batches of 8, 2 steps, small evaluation sets."""
    return ["--model", model, "--logs", str(logs), "--batch-size", "8", "--train-num-samples", "32",
            "--val-num-samples", "16", "--zeroshot-num-samples", "36", "--workers", "1", "--no-progress",
            "--vocab-size", "600", "--max-steps", str(steps)]


def on_standin(module, args, tmp_path, kernels="reference"):
    """Run `python -m <module> <args>` with the stand-in as cupy and the given kernels; return
    (the CompletedProcess, the device-to-host transfers it counted per file:line)."""
    counts = tmp_path / f"transfers_{len(list(tmp_path.glob('transfers_*')))}.json"
    env = {**os.environ, "MINICLIP_KERNELS": kernels, "MINICLIP_STANDIN_TRANSFERS": str(counts),
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-m", "tests.cupy_standin.run", "-m", module, *map(str, args)],
                            capture_output=True, text=True, env=env, cwd=REPO)
    assert result.returncode == 0, f"python -m {module} {' '.join(map(str, args))}\n{result.stderr[-3000:]}"
    with open(counts) as f:
        return result, json.load(f)


def step_losses(run_folder):
    with open(os.path.join(run_folder, "metrics.jsonl")) as f:
        losses = [json.loads(line)["loss"] for line in f if '"loss"' in line]
    assert all(math.isfinite(loss) for loss in losses)
    return losses


@pytest.fixture(scope="module")
def trained_on_device(tmp_path_factory):
    """A checkpoint trained 2 steps with --device cuda on the stand-in (fp32)."""
    folder = tmp_path_factory.mktemp("device_run")
    flags = train_flags(folder / "logs", write_config(folder)) + ["--device", "cuda", "--name", "run"]
    on_standin("miniclip.train", flags, folder)
    return str(folder / "logs" / "run" / "checkpoints" / "step_2.safetensors")
