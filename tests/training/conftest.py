"""A model small enough that a training run takes seconds, and the flags every test run shares."""
import json

import pytest

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture
def tiny_model(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return str(path)


@pytest.fixture
def run_flags(tmp_path, tiny_model):
    """Flags for a quick run on the built-in shapes data: 64 samples, batches of 16, 4 steps an epoch."""
    return ["--model", tiny_model, "--logs", str(tmp_path / "logs"), "--batch-size", "16",
            "--train-num-samples", "64", "--val-num-samples", "32", "--zeroshot-num-samples", "36",
            "--workers", "1", "--no-progress", "--vocab-size", "600"]
