"""A model small enough that a training run takes seconds, the flags every test run shares, and
user_error: how a test checks that the command refuses something (exit code 2, one message)."""
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


def user_error(capsys, argv):
    """Run `python -m miniclip.train` in this process; it must stop on a user error: exit code 2
    and a message on stderr, no traceback (miniclip/errors.py). Return the message."""
    from miniclip import train
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, (exit_info.value.code, err)
    assert "Traceback" not in err, err
    prefix = "python -m miniclip.train: error: "
    assert prefix in err, err
    return err[err.index(prefix) + len(prefix):]
