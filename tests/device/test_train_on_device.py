"""`python -m miniclip.train --device cuda` in every mode, on the strict CuPy stand-in with the
reference kernels: any implicit host conversion or host array mixed into device work fails the run."""
import json
import os
import shutil

import pytest

from tests.device.conftest import on_standin, step_losses, train_flags, write_config

MODES = {"siglip": ["--siglip"], "amp": ["--precision", "amp"],
         "amp_bf16": ["--precision", "amp_bf16"], "accum_freq_2": ["--accum-freq", "2"],
         "lock_image": ["--lock-image"]}


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_trains_on_the_device(tmp_path, mode):
    flags = train_flags(tmp_path / "logs", write_config(tmp_path)) + MODES[mode] + ["--name", mode]
    result, counts = on_standin("miniclip.train", flags + ["--device", "cuda"], tmp_path)
    assert "2 steps of" in result.stdout and "on cuda" in result.stdout
    assert len(step_losses(tmp_path / "logs" / mode)) == 2
    assert counts["pinned_allocations"] >= 2   # each batch went to the device through pinned memory
    emulated = "bfloat16 is emulated" in result.stdout
    assert emulated == (mode == "amp_bf16")


@pytest.mark.slow
def test_the_device_run_computes_what_the_cpu_run_does(tmp_path):
    flags = train_flags(tmp_path / "logs", write_config(tmp_path))
    on_standin("miniclip.train", flags + ["--device", "cuda", "--name", "cuda"], tmp_path)
    on_standin("miniclip.train", flags + ["--device", "cpu", "--name", "cpu"], tmp_path)
    assert step_losses(tmp_path / "logs" / "cuda") == pytest.approx(step_losses(tmp_path / "logs" / "cpu"),
                                                                     rel=1e-5)


@pytest.mark.slow
def test_a_device_run_resumes_exactly(tmp_path):
    flags = (train_flags(tmp_path / "logs", write_config(tmp_path)) + ["--device", "cuda"])
    flags[flags.index("--max-steps"):flags.index("--max-steps") + 2] = ["--epochs", "2", "--train-num-samples", "16"]
    on_standin("miniclip.train", flags + ["--name", "whole"], tmp_path)
    resumed = tmp_path / "logs" / "resumed" / "checkpoints"
    os.makedirs(resumed)
    shutil.copy(tmp_path / "logs" / "whole" / "checkpoints" / "epoch_1.safetensors", resumed)
    result, _ = on_standin("miniclip.train", flags + ["--name", "resumed", "--resume", "latest"], tmp_path)
    assert "resumed from" in result.stdout
    whole = step_losses(tmp_path / "logs" / "whole")
    assert len(whole) == 4 and step_losses(tmp_path / "logs" / "resumed") == whole[2:]


@pytest.mark.slow
def test_a_resnet_image_tower_trains_on_the_device(tmp_path):
    """OpenAI's modified ResNet (convolutions, batch norm, attention pooling) on the device."""
    config = tmp_path / "tiny_resnet.json"
    config.write_text(json.dumps({
        "embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8},
        "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    flags = train_flags(tmp_path / "logs", config) + ["--name", "resnet", "--device", "cuda"]
    result, _ = on_standin("miniclip.train", flags, tmp_path)
    assert "on cuda" in result.stdout and len(step_losses(tmp_path / "logs" / "resnet")) == 2
