"""The host-transfer budget of one training step on the GPU path (issue 14, point 3).

Each device-to-host transfer makes the host wait until the GPU has finished everything queued
before it, so a step that reads one number per parameter waits once per parameter. miniclip's step
reads a fixed few numbers, however many parameters or layers the model has. Counted on the strict
CuPy stand-in (tests/cupy_standin), which counts every transfer per file:line: the transfers of a
4-step run minus those of a 2-step run, halved, are the transfers of one step (both runs evaluate
and save the same way, so only the steps differ; after 2 steps AdamW has state even when float16
overflow skipped the first, so both checkpoints save the same arrays).
"""
import collections

import pytest

from tests.device.conftest import on_standin, train_flags, write_config

# The device-to-host transfers of one step of `--precision amp --grad-clip-norm 1.0`, logging every step:
#   1. the loss, read once for the NaN stop and the log (miniclip/train.py, forward_backward)
#   2. logit_scale, read for the log (miniclip/train.py; not read on steps that are not logged)
#   3. GradScaler.unscale_: whether every gradient is finite, one reduction read once (miniclip/amp.py)
#   4. the reference CLIP-loss backward reads its upstream gradient dy as a Python float
#      (kernels/softmax_xent/reference.py)
# clip_grad_norm and AdamW read nothing: the norm and the clip factor stay on the device.
TRANSFERS_PER_STEP_BUDGET = 4


def transfers_per_step(tmp_path, layers):
    """{file:line: transfers per step} of a run with `layers` blocks in each tower."""
    counts = {}
    for steps in (2, 4):
        folder = tmp_path / f"layers_{layers}_steps_{steps}"
        folder.mkdir()
        flags = train_flags(folder / "logs", write_config(str(folder), layers), steps=steps)
        flags += ["--device", "cuda", "--name", "run", "--precision", "amp", "--grad-clip-norm", "1.0"]
        counts[steps] = collections.Counter(on_standin("miniclip.train", flags, folder)[1]["transfers"])
    difference = counts[4] - counts[2]
    assert all(counts[4][site] >= n for site, n in counts[2].items()), "a 4-step run made fewer transfers"
    assert all(n % 2 == 0 for n in difference.values()), f"not the same transfers on steps 3 and 4: {difference}"
    return {site: n // 2 for site, n in difference.items()}


@pytest.mark.slow
def test_a_training_step_makes_a_fixed_few_host_transfers(tmp_path):
    one_layer = transfers_per_step(tmp_path, layers=1)
    three_layers = transfers_per_step(tmp_path, layers=3)
    assert one_layer == three_layers, (f"the transfers per step grow with the layers:\n  1 layer:  {one_layer}"
                                       f"\n  3 layers: {three_layers}")
    total = sum(three_layers.values())
    assert total <= TRANSFERS_PER_STEP_BUDGET, (f"{total} device-to-host transfers per step, over the budget of "
                                                f"{TRANSFERS_PER_STEP_BUDGET}: {three_layers}")
