"""Data-parallel training on 2 ranks on the CPU (mpirun): the gradient of the global batch, a run
that trains, checkpoints and resumes, and a rank that dies. See miniclip/distributed.py."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from miniclip import train
from miniclip.training.plots import read_metrics
from tests.distributed import gradient_worker
from tests.training.conftest import user_error

# Two ranks sum the same float32 numbers in another order than one process does; where terms
# cancel, the roundings are relative to the parameter's largest gradient, not to the element.
GRADIENT_RTOL = 1e-5
DEATH_TIMEOUT = 60   # seconds: a job with a dead rank must end well before this


@pytest.fixture(scope="module")
def two_rank_gradients(mpirun, tmp_path_factory):
    out = tmp_path_factory.mktemp("gradients") / "gradients.npz"
    result = mpirun(2, sys.executable, "-m", "tests.distributed.gradient_worker", str(out))
    assert result.returncode == 0, result.stdout
    return np.load(out)


@pytest.mark.parametrize("case", gradient_worker.CASES)
def test_two_ranks_of_B_give_the_gradient_of_one_process_with_2B(two_rank_gradients, case):
    assert two_rank_gradients["world_size"] == 2
    loss, expected = gradient_worker.reference(case, world_size=2)
    assert float(two_rank_gradients[f"{case}/loss"]) == pytest.approx(loss, rel=1e-6)
    _, local_loss, gather_with_grad, _ = gradient_worker.CASES[case]
    for name, want in expected.items():
        got = two_rank_gradients[f"{case}/{name}"]
        if not gather_with_grad and "logit" not in name:
            # OpenCLIP's default: each rank's gradient of its own features only, averaged over the
            # 2 ranks, so the towers get half of the global batch's gradient (distributed.py).
            got = 2 * got
        np.testing.assert_allclose(got, want, rtol=GRADIENT_RTOL, atol=GRADIENT_RTOL * np.abs(want).max(),
                                   err_msg=f"{case}: {name}")


def losses(run_folder):
    return [(r["step"], r["loss"]) for r in read_metrics(os.path.join(run_folder, "metrics.jsonl")) if "loss" in r]


def train_flags(run_flags, *extra):
    # 64 samples, 2 ranks x 8 = a global batch of 16: 4 steps an epoch; evaluations at steps 0 and 8.
    return [*run_flags, "--batch-size", "8", "--epochs", "2", "--val-frequency", "2",
            "--zeroshot-frequency", "2", *extra]


@pytest.fixture(scope="module")
def two_rank_run(mpirun, tmp_path_factory):
    """A 2-epoch run of 2 ranks with --local-loss --gather-with-grad: (its run folder, its flags)."""
    from tests.training.conftest import TINY
    root = tmp_path_factory.mktemp("distributed")
    model = root / "tiny.json"
    model.write_text(json.dumps(TINY))
    flags = ["--model", str(model), "--logs", str(root / "logs"), "--train-num-samples", "64",
             "--val-num-samples", "32", "--zeroshot-num-samples", "36", "--workers", "1", "--no-progress",
             "--vocab-size", "600"]
    flags = train_flags(flags, "--distributed", "--local-loss", "--gather-with-grad")
    result = mpirun(2, sys.executable, "-m", "miniclip.train", *flags, "--name", "whole")
    assert result.returncode == 0, result.stdout
    return os.path.join(root, "logs", "whole"), flags, result.stdout


def test_two_ranks_train_like_one_process_with_the_global_batch(two_rank_run, run_flags):
    folder, _, output = two_rank_run
    assert "8 steps of 16 (2 ranks x 8)" in output and output.count("done: 8 steps") == 1   # rank 0 speaks
    config = json.load(open(os.path.join(folder, "config.json")))
    assert config["args"]["world_size"] == 2 and config["global_batch_size"] == 16
    assert [step for step, _ in losses(folder)] == list(range(1, 9))   # one writer
    assert sorted(os.listdir(os.path.join(folder, "checkpoints"))) == ["epoch_1.safetensors", "epoch_2.safetensors"]
    # Rank r reads every other sample of each epoch's order, so the 2 ranks' batches of 8 together
    # are the single process's batch of 16, and the global-batch gradient makes the same steps.
    # (Data-parallel runs take the one-hot loss without hard negatives: the single process is told to as well.)
    code = train.main(train_flags(run_flags, "--batch-size", "16", "--name", "alone", "--no-multi-positive",
                                   "--no-hard-negatives"))
    assert code == 0
    alone = losses(os.path.join(run_flags[run_flags.index("--logs") + 1], "alone"))
    np.testing.assert_allclose([loss for _, loss in losses(folder)], [loss for _, loss in alone], rtol=1e-4)


def test_two_ranks_resume_from_a_checkpoint_exactly(two_rank_run, mpirun, capsys):
    whole, flags, _ = two_rank_run
    logs = os.path.dirname(whole)
    resumed = os.path.join(logs, "resumed", "checkpoints")
    os.makedirs(resumed)
    os.link(os.path.join(whole, "checkpoints", "epoch_1.safetensors"), os.path.join(resumed, "epoch_1.safetensors"))
    result = mpirun(2, sys.executable, "-m", "miniclip.train", *flags, "--name", "resumed", "--resume", "latest")
    assert result.returncode == 0, result.stdout
    assert result.stdout.count("resumed from") == 1
    assert losses(os.path.join(logs, "resumed")) == losses(whole)[4:]   # steps 5-8, bit for bit
    # Another number of ranks would shard the data differently: refused.
    single = [f for f in flags if f not in ("--distributed", "--local-loss", "--gather-with-grad")]
    assert "number of ranks (mpirun -n) 1 (the checkpoint has 2)" in user_error(
        capsys, single + ["--name", "resumed", "--resume", "latest"])


@pytest.mark.parametrize("how", ["exit", "raise"])
def test_a_rank_that_fails_mid_run_ends_the_job(mpirun, run_flags, how):
    """Rank 1 crashes (os._exit) or raises at step 2 while rank 0 waits for it in a collective."""
    flags = train_flags(run_flags, "--distributed", "--name", f"dies_{how}")
    start = time.monotonic()
    try:
        result = mpirun(2, sys.executable, "-m", "miniclip.train", *flags, timeout=DEATH_TIMEOUT,
                        env={"MINICLIP_TEST_FAIL": f"1:2:{how}"})
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"the job still ran {DEATH_TIMEOUT} s after rank 1 failed: it hangs ({error})")
    assert result.returncode != 0, result.stdout
    assert "rank 1: MINICLIP_TEST_FAIL: failing at step 2 on purpose" in result.stdout
    if how == "raise":
        assert "ending the whole job (MPI_Abort)" in result.stdout
    print(f"the job ended {time.monotonic() - start:.1f} s after it started")


def test_distributed_flags_are_checked(run_flags, capsys):
    assert "--local-loss needs --gather-with-grad" in user_error(capsys, run_flags + ["--distributed", "--local-loss"])
    assert "add --distributed" in user_error(capsys, run_flags + ["--gather-with-grad"])
    try:
        import mpi4py  # noqa: F401
        expected = r"(?s)not started by an MPI launcher.*mpirun -n 2"
    except ImportError:
        expected = r"--distributed needs mpi4py.*pip install 'miniclip\[distributed\]'"
    with pytest.raises(SystemExit, match=expected):
        train.main(run_flags + ["--distributed"])


@pytest.mark.gpu
def test_nccl_on_one_gpu(mpirun, run_flags):
    """The NCCL path (CuPy arrays) on one rank: every collective runs, the job trains and saves."""
    flags = [*run_flags, "--distributed", "--local-loss", "--gather-with-grad", "--device", "cuda",
             "--max-steps", "2", "--name", "nccl"]
    result = mpirun(1, sys.executable, "-m", "miniclip.train", *flags)
    assert result.returncode == 0, result.stdout
    assert "done: 2 steps" in result.stdout
