"""tests/gpu_check.sh, the prepared GPU check: its dry run (every step on the CuPy stand-in) passes
every planned step, so the first minute on a lent GPU is never spent on a typo in the script; and
a failing step fails the check.
"""
import json
import os
import subprocess
import sys

import pytest

from tests import gpu_check

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_lines(out):
    with open(os.path.join(out, "gpu_check.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_the_dry_run_passes_every_planned_step(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    result = subprocess.run(["bash", "tests/gpu_check.sh", "--dry-run"], cwd=REPOSITORY, env=env,
                            capture_output=True, text=True, timeout=1200)
    lines = read_lines(tmp_path)
    planned = [name for name, _ in gpu_check.steps(gpu_check.Check(str(tmp_path / "plan"), dry_run=True))]
    failed = [line for line in lines if not line["ok"]]
    assert not failed, f"failed steps: {failed}\nsee {tmp_path}/gpu_check.log; output:\n{result.stdout[-3000:]}"
    assert sorted(line["step"] for line in lines) == sorted(planned)     # each once (kernels ends after train-*)
    assert all(line["dry_run"] for line in lines)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    kernels = next(line for line in lines if line["step"] == "kernels")
    assert kernels["collected"] > 0, kernels


def test_a_failing_step_fails_the_check(tmp_path, monkeypatch, capsys):
    """A step that raises is recorded as failed, the steps after it still run, the exit code is 1."""
    def planned(check):
        def broken():
            raise RuntimeError("a typo")
        return [("broken", broken), ("fine", lambda: check.record("fine", True, 0.0))]

    monkeypatch.setattr(gpu_check, "steps", planned)
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 1
    lines = read_lines(tmp_path)
    assert [(line["step"], line["ok"]) for line in lines] == [("broken", False), ("fine", True)]
    assert "RuntimeError: a typo" in lines[0]["error"]
    assert "1 passed, 1 failed" in capsys.readouterr().out


def test_a_wrong_flag_is_one_message_and_exit_code_2(tmp_path):
    result = subprocess.run(["bash", "tests/gpu_check.sh", "--dry-run", "--bogus"], cwd=REPOSITORY,
                            env=dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path)), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "unrecognized arguments: --bogus" in result.stderr and "Traceback" not in result.stderr
