"""OpenCLIP's flags in `python -m miniclip.train`: --pretrained TAG, --max-parameters,
--force-quick-gelu, --image-mean/--image-std, --lr-scheduler const-cooldown, --save-most-recent,
--delete-previous-checkpoint, and the help's notes where miniclip's defaults differ from OpenCLIP's.
(--report-to and --log-every-n-steps: test_tensorboard.py; --grad-checkpointing: test_grad_checkpointing.py.)"""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import miniclip
from miniclip import optim, train
from miniclip.checkpoint import load_safetensors
from miniclip.models import model_tensors
from miniclip.checkpoint import save_safetensors
from miniclip.training import data as training_data
from miniclip.training.plots import read_metrics
from miniclip.training.state import training_metadata
from tests.conftest import _oracle
from tests.models.test_pretrained import hub_cache
from tests.training.conftest import user_error


def run(flags, name):
    assert train.main(flags + ["--name", name]) == 0
    return os.path.join(flags[flags.index("--logs") + 1], name)


def config_json(folder):
    return json.load(open(os.path.join(folder, "config.json")))


# ---- --pretrained TAG, --max-parameters -------------------------------------------------------

def test_pretrained_tag_trains_from_the_hub_cache_with_the_tags_activation_and_openais_vocabulary(
        run_flags, tiny_model, tmp_path):
    pytest.importorskip("huggingface_hub")
    config = json.load(open(tiny_model))
    miniclip.manual_seed(1)
    weights = model_tensors(miniclip.create_model(config))   # an OpenCLIP-style file: tensors, no config
    save_safetensors(str(hub_cache(tmp_path / "hub", "example/tiny")), weights)
    # The tag is registered for the tiny config in the subprocess, which reads the hub's settings at import.
    code = ("import sys\nfrom miniclip import train\nfrom miniclip.models import pretrained\n"
            f"pretrained.PRETRAINED[{tiny_model!r}] = {{'example': ('example/tiny', True)}}\n"
            "sys.exit(train.main(sys.argv[1:]))\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"), HF_HOME=str(tmp_path / "hf_home"))
    flags = run_flags + ["--max-steps", "1", "--lock-image", "--pretrained", "example", "--name", "tag"]
    result = subprocess.run([sys.executable, "-c", code, *flags], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "logs" / "tag"
    saved = config_json(folder)
    assert saved["model_config"]["quick_gelu"] is True   # the tag's, though the config says false
    assert saved["tokenizer_vocab_size"] == 49408 == saved["model_config"]["text_cfg"]["vocab_size"]
    checkpoint, = glob.glob(str(folder / "checkpoints" / "*"))
    tensors = load_safetensors(checkpoint)[0]
    for name in weights:   # the locked image tower is the tag's, untouched
        if name.startswith("visual."):
            np.testing.assert_array_equal(tensors[name], weights[name], err_msg=name)
    assert not np.array_equal(tensors["text_projection"], weights["text_projection"])   # and it trained


def test_pretrained_that_is_neither_a_file_nor_a_tag_lists_the_models_tags(run_flags, capsys):
    message = user_error(capsys, run_flags + ["--model", "ViT-B-32", "--pretrained", "laion5b"])
    assert message.startswith("--pretrained laion5b: not a file and not a tag of ViT-B-32; its tags: openai, ")


def test_max_parameters_refuses_the_default_model_naming_the_flag(tmp_path, capsys):
    message = user_error(capsys, ["--logs", str(tmp_path), "--max-parameters", "1000"])
    assert message.startswith("--model tiny-rn-xs has 4,583,129 parameters")
    assert "more than --max-parameters 1,000; pass a larger --max-parameters" in message
    run_folder, = os.listdir(tmp_path)
    assert os.listdir(tmp_path / run_folder) == [".lock"]   # refused before anything was built or written


# ---- --force-quick-gelu, --image-mean, --image-std ---------------------------------------------

def test_force_quick_gelu_builds_quickgelu_towers_and_resume_keeps_it(run_flags, capsys):
    folder = run(run_flags + ["--max-steps", "1", "--force-quick-gelu"], "quick")
    assert config_json(folder)["model_config"]["quick_gelu"] is True
    model, _ = miniclip.load_model(glob.glob(os.path.join(folder, "checkpoints", "*"))[0])
    assert type(model.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    message = user_error(capsys, run_flags + ["--max-steps", "2", "--resume", "latest", "--name", "quick"])
    assert "--force-quick-gelu False (the checkpoint has True)" in message


def test_image_mean_and_std_reach_every_transform(run_flags, monkeypatch):
    calls, real = [], training_data.image_transform

    def spy(image_size, is_train, **statistics):
        calls.append((is_train, statistics))
        return real(image_size, is_train, **statistics)

    monkeypatch.setattr(training_data, "image_transform", spy)
    folder = run(run_flags + ["--max-steps", "1", "--image-mean", "0.5", "0.4", "0.3", "--image-std", "0.2", "0.25",
                              "0.3"], "statistics")
    assert {is_train for is_train, _ in calls} == {True, False}   # training, and the evaluations
    assert all(s == {"mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3)} for _, s in calls), calls
    # The checkpoint carries them, so that zeroshot, search and export normalise as training did.
    model, _ = miniclip.load_model(glob.glob(os.path.join(folder, "checkpoints", "*.safetensors"))[0])
    assert (model.visual.image_mean, model.visual.image_std) == ((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    image = np.full((16, 16, 3), 255, np.uint8)
    transform = training_data.transform(train.parse_args(["--image-mean", "0.5", "0.4", "0.3", "--image-std",
                                                          "0.2", "0.25", "0.3"]), 16, is_train=False)
    np.testing.assert_allclose(transform(image)[:, 0, 0], [2.5, 2.4, 7 / 3], rtol=1e-6)


@pytest.mark.parametrize("flags, expected", [
    (["--image-std", "0.2", "0", "0.3"], "--image-std must be 3 finite numbers, each above 0, got 0.2 0.0 0.3"),
    (["--image-mean", "0.5", "nan", "0.3"], "--image-mean must be 3 finite numbers, got 0.5 nan 0.3"),
    (["--lr-scheduler", "const-cooldown"], "--lr-scheduler const-cooldown needs --epochs-cooldown"),
    (["--epochs-cooldown", "1"], "--epochs-cooldown: for --lr-scheduler const-cooldown only (this run's is cosine)"),
    (["--lr-cooldown-end", "1e-5", "--lr-cooldown-power", "2", "--lr-scheduler", "const"],
     "--lr-cooldown-power, --lr-cooldown-end: for --lr-scheduler const-cooldown only (this run's is const)"),
    (["--lr-scheduler", "const-cooldown", "--epochs-cooldown", "0"], "--epochs-cooldown must be at least 1"),
    (["--lr-scheduler", "const-cooldown", "--epochs-cooldown", "2", "--lr-cooldown-power", "0"],
     "--lr-cooldown-power must be greater than 0"),
    (["--lr-scheduler", "const-cooldown", "--epochs-cooldown", "3", "--epochs", "3"],
     "--epochs-cooldown 3 is 12 steps, more than the 11 steps after the warmup of 1"),
])
def test_the_new_flags_refuse_what_cannot_work(run_flags, capsys, flags, expected):
    assert expected in user_error(capsys, run_flags + flags)


# ---- --lr-scheduler const-cooldown -----------------------------------------------------------

class Groups:
    param_groups = [{}]


def test_const_lr_cooldown_by_hand():
    schedule = optim.const_lr_cooldown(Groups(), 1.0, warmup_length=2, steps=10, cooldown_steps=4,
                                       cooldown_power=2.0, cooldown_end_lr=0.2)
    expected = [0.5, 1, 1, 1, 1, 1, 1, 0.2 + 0.8 * 0.75 ** 2, 0.2 + 0.8 * 0.5 ** 2, 0.2 + 0.8 * 0.25 ** 2]
    assert [schedule(step) for step in range(10)] == pytest.approx(expected, rel=1e-15)
    assert Groups.param_groups[0]["lr"] == pytest.approx(expected[-1])


@pytest.mark.oracle
def test_const_lr_cooldown_is_openclips():
    _oracle("open_clip_train")
    from open_clip_train.scheduler import const_lr_cooldown
    for warmup, steps, cooldown, power, end in ((3, 20, 7, 1.0, 0.0), (0, 9, 9, 0.5, 1e-4), (5, 50, 1, 3.0, 2e-3)):
        ours = optim.const_lr_cooldown(Groups(), 4e-3, warmup, steps, cooldown, power, end)
        theirs = const_lr_cooldown(Groups(), 4e-3, warmup, steps, cooldown, power, end)
        assert [ours(s) for s in range(steps)] == [theirs(s) for s in range(steps)]


def test_const_cooldown_run_cools_down_over_its_last_epochs(run_flags):
    folder = run(run_flags + ["--epochs", "3", "--warmup", "2", "--lr", "1e-3", "--lr-scheduler", "const-cooldown",
                              "--epochs-cooldown", "1", "--lr-cooldown-end", "1e-4"], "cooldown")
    lrs = [r["lr"] for r in read_metrics(os.path.join(folder, "metrics.jsonl")) if "loss" in r]
    assert lrs == pytest.approx([5e-4, 1e-3] + [1e-3] * 6 + [1e-4 + 9e-4 * f for f in (1, 0.75, 0.5, 0.25)])


# ---- --save-most-recent, --delete-previous-checkpoint --------------------------------------------

def test_save_most_recent_rewrites_epoch_latest_every_epoch(run_flags, monkeypatch):
    real, saves = train.save_training_state, []

    def recorded(path, model, tokenizer, optimizer, progress, *rest):
        saves.append((os.path.basename(path), progress["step"]))
        real(path, model, tokenizer, optimizer, progress, *rest)

    monkeypatch.setattr(train, "save_training_state", recorded)
    folder = run(run_flags + ["--epochs", "3", "--save-frequency", "2", "--save-most-recent"], "latest")
    assert saves == [("epoch_latest.safetensors", 4), ("epoch_2.safetensors", 8), ("epoch_latest.safetensors", 8),
                     ("epoch_3.safetensors", 12), ("epoch_latest.safetensors", 12)]
    checkpoints = os.path.join(folder, "checkpoints")
    latest, last = (load_safetensors(os.path.join(checkpoints, name))[0] for name in
                    ("epoch_latest.safetensors", "epoch_3.safetensors"))
    assert latest.keys() == last.keys() and all(np.array_equal(latest[k], last[k]) for k in last)
    assert training_metadata(os.path.join(checkpoints, "epoch_latest.safetensors"))["step"] == 12


def test_delete_previous_checkpoint_keeps_only_the_newest(run_flags, tmp_path):
    flags = run_flags + ["--delete-previous-checkpoint", "--save-most-recent"]
    folder = run(flags + ["--epochs", "2"], "newest")
    checkpoints = os.path.join(folder, "checkpoints")
    assert sorted(os.listdir(checkpoints)) == ["epoch_2.safetensors", "epoch_latest.safetensors"]
    outside = str(tmp_path / "kept.safetensors")
    os.rename(os.path.join(checkpoints, "epoch_2.safetensors"), outside)
    # Resumed from epoch_latest, which it writes again: the one file it must not delete.
    run(flags + ["--epochs", "3", "--resume", "latest"], "newest")
    assert sorted(os.listdir(checkpoints)) == ["epoch_3.safetensors", "epoch_latest.safetensors"]
    assert training_metadata(os.path.join(checkpoints, "epoch_latest.safetensors"))["step"] == 12
    # Resumed from epoch_3: deleted once epoch_4 is saved.
    os.remove(os.path.join(checkpoints, "epoch_latest.safetensors"))
    run(flags + ["--epochs", "4", "--resume", "latest"], "newest")
    assert sorted(os.listdir(checkpoints)) == ["epoch_4.safetensors", "epoch_latest.safetensors"]
    # A checkpoint outside the run folder's checkpoints/ is never deleted.
    run(flags + ["--epochs", "3", "--resume", outside], "other")
    assert os.path.exists(outside)


# ---- help --------------------------------------------------------------------------------------

def test_help_gives_openclips_default_where_miniclips_differs():
    from miniclip.training.options import build_parser
    helps = {flag: action.help for action in build_parser()._actions for flag in action.option_strings}
    for flag, theirs in (("--model", "RN50"), ("--lr", "5e-4"), ("--wd", "0.2"), ("--epochs", "32"),
                         ("--warmup", "10000"), ("--precision", "amp"), ("--log-every-n-steps", "100"),
                         ("--zeroshot-frequency", "2"), ("--eps", "1e-6 for a ViT, 1e-8 otherwise"),
                         ("--beta2", "0.98 for a ViT, 0.999 otherwise"),
                         ("--workers", "4")):
        assert f"OpenCLIP's default: {theirs}" in helps[flag], (flag, helps[flag])
    with pytest.raises(SystemExit):   # and argparse formats them (a stray % would fail here)
        train.main(["--help"])
