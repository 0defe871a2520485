"""kill -9 a training run at chosen points, `--resume latest` until it is done: no step lost or
logged twice, no temporary file left, and the losses of a run that was never interrupted, bit for
bit (issue 17).

The trainer runs in a subprocess started through this file (`python -m tests.training.test_faults
POINT N FLAGS...`), which arms one fault and then calls miniclip.train.main: the process sends
itself SIGKILL, which nothing can catch or clean up after,
    step      at the N-th optimizer step, after its forward and backward, before the update
    save      after the N-th fsync of an atomic write: a checkpoint (or config.json, metrics.jsonl)
              fully written to its temporary file, not yet renamed over the real one
    metrics   at the N-th metrics.jsonl line, half of it written
The points and the N's come from a seeded generator, so a failure reproduces.
"""
import glob
import json
import os
import signal
import subprocess
import sys

import numpy as np

from miniclip import train
from miniclip.checkpoint import load_safetensors
from miniclip.training.plots import read_metrics

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EPOCHS, STEPS_PER_EPOCH = 3, 4   # 64 samples in batches of 16
FAULTS = ("save", "step", "metrics", "save", "step")   # one killed process each


def arm(point, n, run_folder):
    """Make this process kill itself at the n-th event of kind `point` (see the module docstring)."""
    events = iter(range(1, n + 1))

    def nth():
        return next(events, None) == n

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "step":
        real_step = train.optim.AdamW.step

        def step(optimizer):
            if nth():
                die()
            real_step(optimizer)
        train.optim.AdamW.step = step
    elif point == "save":
        real_fsync = os.fsync

        def fsync(fd):
            real_fsync(fd)
            if nth():
                die()
        os.fsync = fsync
    elif point == "metrics":
        real_line = train.metrics_line

        def metrics_line(record):
            line = real_line(record)
            if nth():
                with open(os.path.join(run_folder, "metrics.jsonl"), "a") as f:
                    f.write(line[:len(line) // 2])
                die()
            return line
        train.metrics_line = metrics_line
    else:
        raise ValueError(f"unknown fault point {point!r}")


def flags_for(run_flags):
    return run_flags + ["--epochs", str(EPOCHS), "--save-frequency", "1", "--zeroshot-frequency", "99",
                        "--val-frequency", "99"]


def temporaries(run_folder):
    return glob.glob(os.path.join(run_folder, ".tmp-*")) + glob.glob(os.path.join(run_folder, "checkpoints", ".tmp-*"))


def test_kill_9_at_random_points_then_resume_loses_nothing(run_flags, tmp_path):
    flags = flags_for(run_flags)
    assert train.main(flags + ["--name", "whole"]) == 0
    logs = flags[flags.index("--logs") + 1]
    whole = read_metrics(os.path.join(logs, "whole", "metrics.jsonl"))
    folder = os.path.join(logs, "killed")
    rng = np.random.default_rng(17)
    left_temporaries, outputs = [], []
    for round_, point in enumerate(FAULTS + (None,)):
        n = int(rng.integers(1, 4)) if point == "save" else int(rng.integers(1, STEPS_PER_EPOCH + 2))
        command = [sys.executable, "-m", "tests.training.test_faults", point or "none", str(n), *flags,
                   "--name", "killed", *(["--resume", "latest"] if round_ else [])]
        result = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
        outputs.append(f"--- {point} {n}: exit {result.returncode}\n{result.stdout}{result.stderr}")
        left_temporaries += temporaries(folder)
        if result.returncode == 0:
            break
        assert result.returncode == -signal.SIGKILL, "\n".join(outputs)
    assert result.returncode == 0, "\n".join(outputs)
    assert left_temporaries, "no kill came mid-save: the test did not test that"

    records = read_metrics(os.path.join(folder, "metrics.jsonl"))
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1)), ("\n".join(outputs), steps)
    evaluations = [r["step"] for r in records if "eval" in r]
    assert len(evaluations) == len(set(evaluations)), evaluations
    assert temporaries(folder) == []
    # Bit for bit the losses of the run that never stopped, and its last checkpoint.
    assert [r["loss"] for r in records if "loss" in r] == [r["loss"] for r in whole if "loss" in r]
    assert sorted(os.listdir(os.path.join(folder, "checkpoints"))) == [f"epoch_{e}.safetensors" for e in (1, 2, 3)]
    last, expected = (load_safetensors(os.path.join(f, "checkpoints", "epoch_3.safetensors"))[0]
                      for f in (folder, os.path.join(logs, "whole")))
    assert last.keys() == expected.keys() and all(np.array_equal(last[k], expected[k]) for k in last)


if __name__ == "__main__":
    point, n, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if point != "none":
        arm(point, n, os.path.join(argv[argv.index("--logs") + 1], argv[argv.index("--name") + 1]))
    sys.exit(train.main(argv))
