"""python -m miniclip.train end to end, on a tiny model: learning, the run folder, exact resume,
Ctrl-C, interrupted checkpoint writes, NaN, bad data, --accum-freq, CSV separators."""
import functools
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import miniclip
from miniclip import amp, train
from miniclip.checkpoint import load_safetensors
from miniclip.data.fashion_mnist import DEFAULT_ROOT, ROOT_VARIABLE
from miniclip.training.data import RunData
from miniclip.training.plots import read_metrics
from tests.data.fashion_mnist_files import write_fashion_mnist
from tests.training.conftest import user_error


def run(flags, name):
    """Train in this process; return (exit code, the run folder)."""
    code = train.main(flags + ["--name", name])
    logs = flags[flags.index("--logs") + 1]
    return code, os.path.join(logs, name)


def step_losses(run_folder):
    return [(r["step"], r["loss"]) for r in read_metrics(os.path.join(run_folder, "metrics.jsonl")) if "loss" in r]


def test_loss_falls_and_the_run_folder_has_everything(run_flags):
    code, folder = run(run_flags + ["--epochs", "6", "--lr", "3e-3", "--wd", "0"], "learns")
    assert code == 0
    losses = [loss for _, loss in step_losses(folder)]
    assert len(losses) == 24
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.2, losses   # from about ln 16 = 2.77
    assert len({r["logit_scale"] for r in read_metrics(os.path.join(folder, "metrics.jsonl")) if "loss" in r}) > 20
    config = json.load(open(os.path.join(folder, "config.json")))
    assert config["args"]["batch_size"] == 16 and config["total_steps"] == 24
    assert config["model_config"]["text_cfg"]["vocab_size"] == config["tokenizer_vocab_size"] <= 600
    evals = [r for r in read_metrics(os.path.join(folder, "metrics.jsonl")) if "eval" in r]
    assert [r["step"] for r in evals] == [0, 4, 8, 12, 16, 20, 24]   # before training, then every epoch
    for key in ("zeroshot_seen_top1", "zeroshot_seen_top5", "zeroshot_unseen_top1", "val_loss",
                "val_image_to_text_R@1", "val_text_to_image_median_rank", "hard_negatives_swap_colors",
                "hard_negatives_reverse_relation"):
        assert key in evals[-1]["eval"]
    assert sorted(os.listdir(os.path.join(folder, "checkpoints"))) == [f"epoch_{e}.safetensors" for e in range(1, 7)]
    for plot in ("training.png", "accuracy.png", "similarity.png"):
        assert Image.open(os.path.join(folder, "plots", plot)).size[0] > 100
    # A checkpoint is also a model file: weights, config and tokenizer.
    model, tokenizer = miniclip.load_model(os.path.join(folder, "checkpoints", "epoch_6.safetensors"))
    assert tokenizer.vocab_size == model.vocab_size
    assert float(np.exp(model.logit_scale.data)) <= 100


@pytest.mark.parametrize("precision", ["fp32", "amp"])
def test_resume_from_an_epoch_checkpoint_gives_the_same_losses(run_flags, tmp_path, monkeypatch, precision):
    # A loss scale of 2^24 overflows float16 at first, so the scale at the checkpoint is not the start's.
    monkeypatch.setattr(amp, "GradScaler", functools.partial(amp.GradScaler, init_scale=2.0 ** 24))
    flags = run_flags + ["--epochs", "2", "--precision", precision]
    _, whole = run(flags, "whole")
    # A second run that only has the first epoch's checkpoint continues from it in a new process state.
    resumed = os.path.join(tmp_path / "logs", "resumed", "checkpoints")
    os.makedirs(resumed)
    os.link(os.path.join(whole, "checkpoints", "epoch_1.safetensors"), os.path.join(resumed, "epoch_1.safetensors"))
    code, folder = run(flags + ["--resume", "latest"], "resumed")
    assert code == 0
    assert step_losses(folder) == step_losses(whole)[4:]   # steps 5-8, bit for bit
    if precision == "amp":   # and the float16 loss scale went on from where it was (it fell at step 1)
        scales = [[r["loss_scale"] for r in read_metrics(os.path.join(f, "metrics.jsonl")) if "loss" in r]
                  for f in (whole, folder)]
        assert scales[1] == scales[0][4:] and scales[1][0] < 2.0 ** 24


def test_a_resumed_run_forgets_the_steps_logged_after_its_checkpoint(run_flags):
    flags = run_flags + ["--epochs", "2"]
    _, folder = run(flags, "crashed")
    expected = read_metrics(os.path.join(folder, "metrics.jsonl"))
    os.remove(os.path.join(folder, "checkpoints", "epoch_2.safetensors"))   # as if it died before saving
    code, _ = run(flags + ["--resume", "latest"], "crashed")
    assert code == 0
    again = read_metrics(os.path.join(folder, "metrics.jsonl"))
    assert [r["step"] for r in again] == [r["step"] for r in expected]   # steps 5-8 once each, not twice
    assert step_losses(folder) == [(r["step"], r["loss"]) for r in expected if "loss" in r]


@pytest.mark.parametrize("precision", ["amp", "amp_bf16"])
def test_mixed_precision_trains_like_float32(run_flags, precision):
    flags = run_flags + ["--epochs", "3", "--lr", "3e-3", "--wd", "0"]
    _, fp32 = run(flags, "fp32")
    code, folder = run(flags + ["--precision", precision], precision)
    assert code == 0
    losses, reference = [l for _, l in step_losses(folder)], [l for _, l in step_losses(fp32)]
    assert len(losses) == 12 and losses != reference
    # The same weights: only the 16-bit rounding differs (bfloat16 keeps 8 significant bits, float16
    # 11, so its first loss may differ 8x more: about 0.3% of a loss near 3.5).
    assert abs(losses[0] - reference[0]) < (5e-3 if precision == "amp" else 2e-2)
    assert np.mean(losses[-4:]) < losses[0] - 0.5   # and it learns as float32 does
    records = [r for r in read_metrics(os.path.join(folder, "metrics.jsonl")) if "loss" in r]
    if precision == "amp":   # float16 scales the loss; a step that overflowed was skipped and halved it
        scales = [r["loss_scale"] for r in records]
        assert scales[0] == 2.0 ** 16 and all(s > 0 for s in scales)
        for before, after in zip(records, records[1:]):
            assert after["loss_scale"] == before["loss_scale"] / (2 if before["skipped_step"] else 1)
    else:
        assert "loss_scale" not in records[0]


def test_ctrl_c_saves_and_resume_latest_continues_exactly(run_flags, tmp_path):
    flags = run_flags + ["--epochs", "3", "--train-num-samples", "96"]   # 6 steps an epoch, 18 in all
    _, whole = run(flags, "whole")
    command = [sys.executable, "-m", "miniclip.train", *flags, "--name", "stopped"]
    folder = os.path.join(tmp_path / "logs", "stopped")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = os.path.join(folder, "metrics.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and (not os.path.exists(metrics) or len(step_losses(folder)) < 2):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "--resume latest" in output
    done = len(step_losses(folder))
    assert 2 <= done < 18
    if done % 6:   # stopped mid-epoch
        assert os.path.exists(os.path.join(folder, "checkpoints", f"step_{done}.safetensors"))
    code, folder = run(flags + ["--resume", "latest"], "stopped")
    assert code == 0
    assert step_losses(folder) == step_losses(whole)


def test_an_interrupted_checkpoint_write_leaves_the_previous_one_usable(run_flags, monkeypatch, tmp_path):
    flags = run_flags + ["--epochs", "2"]
    real_save, real_fsync, saves = train.save_training_state, os.fsync, []

    def disk_full(fd):
        raise OSError("disk full (simulated)")

    def second_save_fails_in_the_write(*args):
        saves.append(1)
        if len(saves) == 2:
            monkeypatch.setattr(os, "fsync", disk_full)   # the data is written, the file not yet renamed
        real_save(*args)

    monkeypatch.setattr(train, "save_training_state", second_save_fails_in_the_write)
    with pytest.raises(OSError, match="disk full"):
        run(flags, "crash")
    monkeypatch.setattr(os, "fsync", real_fsync)
    checkpoints = os.path.join(tmp_path / "logs", "crash", "checkpoints")
    assert sorted(os.listdir(checkpoints)) == ["epoch_1.safetensors"]   # no half-written file, no temp file
    code, folder = run(flags + ["--resume", "latest"], "crash")
    assert code == 0 and os.path.exists(os.path.join(checkpoints, "epoch_2.safetensors"))


def test_a_nan_loss_stops_with_a_message_and_keeps_the_last_checkpoint(run_flags, monkeypatch, tmp_path, capsys):
    real_step, steps = train.forward_backward, []

    def nan_at_step_6(*args, **kwargs):
        steps.append(1)
        return float("nan") if len(steps) == 6 else real_step(*args, **kwargs)

    monkeypatch.setattr(train, "forward_backward", nan_at_step_6)
    message = user_error(capsys, run_flags + ["--epochs", "2", "--name", "nan"])
    assert re.search(r"the loss is nan at step 6.*last good checkpoint \(.*epoch_1.safetensors\)", message), message
    assert os.listdir(os.path.join(tmp_path / "logs", "nan", "checkpoints")) == ["epoch_1.safetensors"]


def test_accum_freq_gives_the_large_batch_gradient(tiny_model):
    """Two micro-batches of 4 with cached features = one batch of 8, for every parameter."""
    miniclip.manual_seed(0)
    config = json.load(open(tiny_model))
    config["text_cfg"]["vocab_size"] = 600
    model = miniclip.create_model(config).double()
    rng = np.random.default_rng(0)
    images = rng.standard_normal((8, 3, 16, 16))
    tokens = np.zeros((8, 24), np.int64)
    tokens[:, 0], tokens[:, 1:6], tokens[:, 6] = 598, rng.integers(1, 500, (8, 5)), 599   # SOT ... EOT
    gradients = []
    for accum_freq in (1, 2, 4):
        model.zero_grad()
        loss = train.forward_backward(model, images, tokens, accum_freq)
        gradients.append((loss, {name: p.grad.copy() for name, p in model.named_parameters()}))
    (loss1, g1) = gradients[0]
    for loss, g in gradients[1:]:
        assert loss == pytest.approx(loss1, rel=1e-12)
        for name in g1:
            np.testing.assert_allclose(g[name], g1[name], rtol=1e-9, atol=1e-12, err_msg=name)


def test_accum_freq_gives_the_large_batch_multi_positive_gradient(tiny_model):
    """Keys of the K*B batch (classes across both micro-batches) make every micro-batch's loss
    multi-positive: the same loss and gradient as the whole batch's."""
    miniclip.manual_seed(0)
    config = json.load(open(tiny_model))
    config["text_cfg"]["vocab_size"] = 600
    model = miniclip.create_model(config).double()
    rng = np.random.default_rng(1)
    images = rng.standard_normal((8, 3, 16, 16))
    tokens = np.zeros((8, 24), np.int64)
    tokens[:, 0], tokens[:, 1:6], tokens[:, 6] = 598, rng.integers(1, 500, (8, 5)), 599
    keys = np.array([0, 1, 2, 3, 4, 0, 6, 2])   # classes shared across the two micro-batches
    results = []
    for accum_freq, k in ((1, keys), (2, keys), (1, None)):
        model.zero_grad()
        loss = train.forward_backward(model, images, tokens, accum_freq, keys=k)
        results.append((loss, {name: p.grad.copy() for name, p in model.named_parameters()}))
    (loss1, g1), (loss2, g2), (one_hot, _) = results
    assert loss2 == pytest.approx(loss1, rel=1e-12) and abs(loss1 - one_hot) > 0.01
    for name in g1:
        np.testing.assert_allclose(g2[name], g1[name], rtol=1e-9, atol=1e-12, err_msg=name)


def test_pair_keys_match_identical_captions_and_the_prompts_of_one_class():
    tokens = np.array([[1, 5, 2, 0], [1, 6, 2, 0], [1, 5, 2, 0], [1, 7, 7, 2], [1, 8, 2, 0], [1, 9, 2, 0]])
    prompts = {tokens[3].tobytes(): 1, tokens[4].tobytes(): 1, tokens[5].tobytes(): 0}   # class 1's two prompts
    keys = RunData(None, None, class_of_caption=prompts).pair_keys(tokens)
    same = keys[:, None] == keys[None, :]
    expected = np.eye(6, dtype=bool)
    expected[0, 2] = expected[2, 0] = expected[3, 4] = expected[4, 3] = True
    np.testing.assert_array_equal(same, expected)


def test_pair_keys_on_shapes_join_captions_that_mean_the_same():
    from miniclip.data.shapes import caption_meaning
    from miniclip.tokenizer import train_bpe
    captions = ["a photo of a red disc.", "there is a big red circle.", "a red star.",
                "a blue box left of a red star.", "a red star to the right of a little blue square."]
    tokenizer = train_bpe(captions, 600, context_length=24, exact=False)
    keys = RunData(None, None, tokenizer=tokenizer, caption_key=caption_meaning).pair_keys(tokenizer(captions))
    assert list(keys) == [0, 0, 1, 2, 2]


@pytest.mark.parametrize("cached", [32_768, 2])   # 2: the caches are emptied mid-batch
def test_negative_tokens_draw_one_of_each_captions_hard_negatives_as_drawn_from_the_text(cached, monkeypatch):
    import miniclip.training.data as training_data
    monkeypatch.setattr(training_data, "CACHED_CAPTIONS", cached)
    from miniclip.data.shapes import caption_hard_negative, caption_hard_negatives, caption_meaning
    from miniclip.tokenizer import train_bpe
    captions = ["a photo of a red disc.", "a blue box left of a green star.", "a dog.", "a red disc.",
                "a photo of a red disc."]
    tokenizer = train_bpe(captions + ["a purple pink yellow circle square triangle diamond cross plus sign "
                                      "rhombus right above below over under"], 600, context_length=24, exact=False)
    data = RunData(None, None, tokenizer=tokenizer, caption_key=caption_meaning, hard_negatives_of=caption_hard_negatives)
    tokens = tokenizer(captions)
    for seed in range(3):   # the second and third batches find every caption's negatives already kept
        drawn = data.negative_tokens(tokens, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        from_text = [caption_hard_negative(text, rng) for text in captions]
        np.testing.assert_array_equal(drawn, tokenizer([t for t in from_text if t is not None]))   # "a dog." has none
        keys = data.pair_keys(tokens)
        assert list(keys) == [0, 1, 2, 0, 0]   # "a red disc." means what "a photo of a red disc." does
    assert len(data._negatives) <= min(4, cached) and len(data._keys) <= min(4, cached)
    if cached > 4:
        assert len(data._negatives) == 4   # one entry per distinct token row, kept across batches


def test_shapes_runs_add_hard_negative_captions_unless_turned_off(run_flags):
    flags = run_flags + ["--max-steps", "2"]
    with_negatives = [loss for _, loss in step_losses(run(flags, "negatives")[1])]
    without = [loss for _, loss in step_losses(run(flags + ["--no-hard-negatives"], "plain")[1])]
    assert with_negatives[0] > without[0] + 1e-3   # the same weights and batch, more captions to beat


def test_hard_negatives_need_the_default_loss_and_one_micro_batch(tiny_model):
    model = miniclip.create_model(json.load(open(tiny_model)))
    images, tokens = np.zeros((4, 3, 16, 16), np.float32), np.ones((4, 24), np.int64)
    with pytest.raises(ValueError, match="accum_freq 1"):
        train.forward_backward(model, images, tokens, 2, negative_tokens=tokens[:2])


def test_the_logit_scale_is_clamped_to_100(run_flags, tiny_model):
    config = json.load(open(tiny_model))
    config["init_logit_scale"] = 5.0   # exp(5) = 148
    with open(tiny_model, "w") as f:
        json.dump(config, f)
    code, folder = run(run_flags + ["--max-steps", "2"], "clamped")
    scales = [r["logit_scale"] for r in read_metrics(os.path.join(folder, "metrics.jsonl")) if "loss" in r]
    assert scales[0] == pytest.approx(100) and max(scales) <= 100 * (1 + 1e-6)


def test_siglip_starts_at_its_init_and_trains(run_flags):
    code, folder = run(run_flags + ["--siglip", "--max-steps", "3"], "siglip")
    assert code == 0
    model, _ = miniclip.load_model(glob.glob(os.path.join(folder, "checkpoints", "*"))[0])
    assert model.logit_bias is not None
    config = json.load(open(os.path.join(folder, "config.json")))["model_config"]
    assert config["init_logit_scale"] == pytest.approx(np.log(10)) and config["init_logit_bias"] == -10


def test_lock_image_leaves_the_image_tower_unchanged(run_flags):
    miniclip.manual_seed(0)
    code, folder = run(run_flags + ["--lock-image", "--max-steps", "2"], "locked")
    tensors, _ = load_safetensors(glob.glob(os.path.join(folder, "checkpoints", "*"))[0])
    miniclip.manual_seed(0)   # the run seeds with --seed 0 before building the model: the same init
    config = json.load(open(os.path.join(folder, "config.json")))["model_config"]
    fresh = miniclip.create_model(config).state_dict()
    assert all(np.array_equal(tensors[k], fresh[k].data) for k in fresh if k.startswith("visual."))
    assert not np.array_equal(tensors["text_projection"], fresh["text_projection"].data)


def write_pairs(folder, n, separator, broken=()):
    rng = np.random.default_rng(0)
    lines = [separator.join(["filepath", "title"])]
    for i in range(n):
        if i not in broken:
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        lines.append(separator.join([f"{i}.png", f"a picture number {i}"]))
    return lines


@pytest.mark.parametrize("separator, extension", [("\t", "tsv"), (",", "csv")])
def test_trains_on_a_csv_file(run_flags, tmp_path, separator, extension):
    path = tmp_path / f"pairs.{extension}"
    path.write_text("\n".join(write_pairs(tmp_path, 32, separator)) + "\n")
    flags = run_flags + ["--train-data", str(path), "--val-data", str(path), "--max-steps", "2"]
    if separator == ",":
        with pytest.warns(UserWarning, match="read as comma-separated"):
            code, folder = run(flags, "csv")
    else:
        code, folder = run(flags, "tsv")
    assert code == 0 and len(step_losses(folder)) == 2
    evals = [r for r in read_metrics(os.path.join(folder, "metrics.jsonl")) if "eval" in r]
    assert "val_image_to_text_R@1" in evals[-1]["eval"]


def test_bad_data_is_an_error_naming_the_file_or_skipped_and_counted(run_flags, tmp_path, capsys):
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(write_pairs(tmp_path, 40, "\t", broken=(3,))) + "\n")
    flags = run_flags + ["--train-data", str(path), "--epochs", "1", "--batch-size", "8"]
    assert re.search(r"pairs.tsv line 5.*3.png", user_error(capsys, flags + ["--name", "bad"]))
    with pytest.warns(UserWarning, match="skipped 1 bad samples"):
        code, _ = run(flags + ["--skip-bad-samples"], "skipped")
    assert code == 0
    assert "skipped 1 bad samples" in capsys.readouterr().out


def test_wrong_column_name_and_missing_data_are_clear_errors(run_flags, tmp_path, capsys):
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(write_pairs(tmp_path, 4, "\t")) + "\n")
    assert "caption" in user_error(capsys, run_flags + ["--train-data", str(path), "--csv-caption-key", "caption",
                                                        "--name", "columns"])
    assert re.search("data not found: .*nowhere.tsv",
                     user_error(capsys, run_flags + ["--train-data", str(tmp_path / "nowhere.tsv"), "--name", "missing"]))


def test_bad_flags_are_refused(run_flags, capsys):
    assert "--batch-size must be at least 1" in user_error(capsys, run_flags + ["--batch-size", "0"])
    assert "--resume latest needs --name" in user_error(capsys, run_flags + ["--resume", "latest"])
    if not miniclip.has_gpu():
        assert "--device cuda: CuPy cannot see a CUDA GPU" in user_error(capsys, run_flags + ["--device", "cuda"])


def test_resume_refuses_flags_that_change_the_data(run_flags, capsys):
    run(run_flags + ["--max-steps", "2"], "r")
    message = user_error(capsys, run_flags + ["--max-steps", "2", "--resume", "latest", "--batch-size", "8", "--name", "r"])
    assert re.search("--batch-size 8 .*the checkpoint has 16", message), message


@pytest.fixture
def fashion_mnist_files(tmp_path, monkeypatch):
    """Synthetic Fashion-MNIST files (300 train, 100 test images) that FashionMNIST reads."""
    folder = write_fashion_mnist(tmp_path / "fashion-mnist")
    monkeypatch.setenv(ROOT_VARIABLE, str(folder))
    return folder


def test_trains_on_fashion_mnist_and_classifies_its_test_split(run_flags, fashion_mnist_files):
    """The --dataset fashion-mnist path on synthetic files: every machine runs it."""
    code, folder = run(run_flags + ["--dataset", "fashion-mnist", "--max-steps", "2"], "fashion")
    assert code == 0
    evals = [r for r in read_metrics(os.path.join(folder, "metrics.jsonl")) if "eval" in r]
    assert {"zeroshot_fashion_mnist_top1", "zeroshot_fashion_mnist_top5", "val_loss"} <= set(evals[-1]["eval"])
    config = json.load(open(os.path.join(folder, "config.json")))
    assert config["train_samples"] == 64   # --train-num-samples takes the first 64 of the 300


def test_class_captions_train_with_the_multi_positive_loss_unless_turned_off(run_flags, fashion_mnist_files):
    """16 captions of 10 classes repeat a class: the multi-positive loss (a different value from
    the first step on); --no-multi-positive gives the one-hot loss."""
    flags = run_flags + ["--dataset", "fashion-mnist", "--max-steps", "2"]
    multi = [loss for _, loss in step_losses(run(flags, "multi")[1])]
    one_hot = [loss for _, loss in step_losses(run(flags + ["--no-multi-positive"], "one_hot")[1])]
    assert abs(multi[0] - one_hot[0]) > 1e-3, (multi, one_hot)   # the same weights and batch


@pytest.mark.skipif(not os.path.exists(os.path.join(DEFAULT_ROOT, "t10k-labels-idx1-ubyte.gz")),
                    reason=f"Fashion-MNIST is not in {DEFAULT_ROOT}: sudo apt-get install dataset-fashion-mnist")
@pytest.mark.slow
def test_learns_to_classify_the_real_fashion_mnist_test_split(run_flags, monkeypatch):
    monkeypatch.delenv(ROOT_VARIABLE, raising=False)
    flags = run_flags + ["--dataset", "fashion-mnist", "--train-num-samples", "3200", "--epochs", "1",
                         "--batch-size", "64", "--lr", "3e-3"]
    code, folder = run(flags, "fashion_real")
    assert code == 0
    evals = [r for r in read_metrics(os.path.join(folder, "metrics.jsonl")) if "eval" in r]
    assert evals[-1]["eval"]["zeroshot_fashion_mnist_top1"] > 0.4, evals[-1]   # chance: 0.1


def test_help_says_that_bfloat16_is_emulated(capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    assert "amp_bf16: bfloat16 matmuls, emulated" in " ".join(capsys.readouterr().out.split())


# ---- issue 17: nothing lost, nothing silently wrong ----------------------------------------------

def test_a_run_folder_that_holds_a_run_needs_resume(run_flags, tmp_path, capsys):
    flags = run_flags + ["--max-steps", "2"]
    _, folder = run(flags, "taken")
    before = {name: open(os.path.join(folder, name), "rb").read() for name in ("config.json", "metrics.jsonl")}
    message = user_error(capsys, flags + ["--epochs", "3", "--name", "taken"])
    assert "already holds a run" in message and "--resume latest" in message and "--name" in message
    assert {name: open(os.path.join(folder, name), "rb").read() for name in before} == before   # untouched
    code, _ = run(flags + ["--max-steps", "3", "--resume", "latest"], "taken")
    assert code == 0 and [step for step, _ in step_losses(folder)] == [1, 2, 3]


def test_a_live_run_locks_its_folder_even_against_resume(run_flags, tmp_path, capsys):
    from miniclip.training.state import own_run_folder
    folder = os.path.join(tmp_path / "logs", "busy")
    with own_run_folder(folder, resuming=False):   # another live run (an flock of its own)
        message = user_error(capsys, run_flags + ["--max-steps", "2", "--name", "busy", "--resume", "latest"])
    assert f"is in use by a run that is still going (process {os.getpid()}" in message
    code, _ = run(run_flags + ["--max-steps", "2", "--resume", "latest"], "busy")   # the lock ended with it
    assert code == 0 and len(step_losses(folder)) == 2


def test_default_run_names_started_in_the_same_second_differ(run_flags, tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda pattern: "2026_01_01-00_00_00")
    for _ in range(2):
        assert train.main(run_flags + ["--max-steps", "1"]) == 0
    names = sorted(os.listdir(tmp_path / "logs"))
    assert len(names) == 2 and names[1] == names[0] + "-2", names
    assert all(len(step_losses(os.path.join(tmp_path / "logs", name))) == 1 for name in names)


def all_finite(path):
    return all(np.isfinite(array).all() for array in load_safetensors(path)[0].values() if array.dtype.kind == "f")


def test_a_diverged_run_never_saves_weights_that_are_not_finite(run_flags, tmp_path, capsys):
    # lr 1e3: the loss can stay finite while the update makes weights or moments infinite (a save
    # once wrote 75 such tensors into epoch_1; the loss was the only check).
    message = user_error(capsys, run_flags + ["--lr", "1e3", "--max-steps", "8", "--name", "diverged"])
    found = re.search(r"(hold NaN or infinity|the loss is (nan|inf)).*last good checkpoint \((.*?)\)", message)
    assert found, message
    checkpoints = os.path.join(tmp_path / "logs", "diverged", "checkpoints")
    saved = sorted(glob.glob(os.path.join(checkpoints, "*")))
    assert saved == ([] if found[3] == "none" else [found[3]]), (saved, message)   # only the one named
    assert all(all_finite(path) for path in saved)


def test_a_diverged_run_says_so_in_one_line_without_numpys_warnings(tmp_path):
    # The default model at lr 1e3 overflows within a few steps; NumPy would warn at every
    # operation that overflows before the trainer's own message.
    command = [sys.executable, "-m", "miniclip.train", "--no-progress", "--logs", str(tmp_path), "--name", "d",
               "--train-num-samples", "64", "--batch-size", "16", "--max-steps", "8", "--lr", "1e3",
               "--zeroshot-num-samples", "36", "--val-num-samples", "32"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [line for line in result.stderr.splitlines()
                                          if line.startswith("python -m miniclip.train: error: ")], result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_a_save_refuses_non_finite_weights_and_names_the_last_good_checkpoint(run_flags, tmp_path, monkeypatch,
                                                                              capsys):
    real_step, steps = train.optim.AdamW.step, []

    def weights_blow_up_at_step_8(optimizer):
        real_step(optimizer)
        steps.append(1)
        if len(steps) == 8:   # after the last loss: only the state to be saved tells
            optimizer.param_groups[1]["params"][-1].data[...] = np.inf

    monkeypatch.setattr(train.optim.AdamW, "step", weights_blow_up_at_step_8)
    message = user_error(capsys, run_flags + ["--epochs", "2", "--name", "inf"])
    assert re.search(r"after step 8, 1 of \d+ weight and optimizer tensors hold NaN or infinity.*"
                     r"last good checkpoint \(.*epoch_1.safetensors\)", message), message
    checkpoints = os.path.join(tmp_path / "logs", "inf", "checkpoints")
    assert os.listdir(checkpoints) == ["epoch_1.safetensors"] and all_finite(os.path.join(checkpoints, "epoch_1.safetensors"))


def test_resume_refuses_a_checkpoint_that_is_not_finite(run_flags, tmp_path, capsys):
    from miniclip.checkpoint import save_safetensors
    from miniclip.checkpoint import read_safetensors_metadata
    _, folder = run(run_flags + ["--max-steps", "2"], "old")
    path = glob.glob(os.path.join(folder, "checkpoints", "*"))[0]
    tensors = load_safetensors(path)[0]
    tensors["text_projection"][0, 0] = np.nan   # as saved before saves were checked
    save_safetensors(path, tensors, read_safetensors_metadata(path))
    message = user_error(capsys, run_flags + ["--max-steps", "3", "--resume", "latest", "--name", "old"])
    assert "1 tensors hold NaN or infinity (text_projection" in message and "earlier checkpoint" in message


def test_resume_drops_a_cut_last_metrics_line_skips_foreign_files_and_removes_temporaries(run_flags, tmp_path, capsys):
    flags = run_flags + ["--epochs", "2"]
    _, folder = run(flags, "crashed")
    expected = read_metrics(os.path.join(folder, "metrics.jsonl"))
    checkpoints = os.path.join(folder, "checkpoints")
    # As left by kill -9: epoch 2's save cut short (its temporary file stays), a metrics line half written.
    os.rename(os.path.join(checkpoints, "epoch_2.safetensors"), os.path.join(checkpoints, ".tmp-x1y2epoch_2.safetensors"))
    with open(os.path.join(folder, "metrics.jsonl"), "a") as f:
        f.write('{"step": 9, "epoch": 2, "lo')
    # and files that are not this run's checkpoints: a foreign file, a model file
    with open(os.path.join(checkpoints, "junk.safetensors"), "wb") as f:
        f.write(b"\x07\x00\x00\x00\x00\x00\x00\x00not json")
    model, tokenizer = miniclip.load_model(os.path.join(checkpoints, "epoch_1.safetensors"))
    miniclip.save_model(os.path.join(checkpoints, "model.safetensors"), model, tokenizer)
    whole_file = open(os.path.join(checkpoints, "epoch_1.safetensors"), "rb").read()
    with open(os.path.join(checkpoints, "epoch_9.safetensors"), "wb") as f:   # a copy cut short
        f.write(whole_file[:len(whole_file) // 2])
    capsys.readouterr()
    with pytest.warns(UserWarning, match="skipping .*junk.safetensors") as warned:
        code, _ = run(flags + ["--resume", "latest"], "crashed")
    assert code == 0
    skipped = [str(w.message) for w in warned]
    assert any("model.safetensors" in m and "model file" in m for m in skipped), skipped
    assert any("epoch_9.safetensors" in m for m in skipped), skipped
    assert "removed 1 temporary files left by an interrupted save: " in capsys.readouterr().out
    assert not glob.glob(os.path.join(checkpoints, ".tmp-*")) and not glob.glob(os.path.join(folder, ".tmp-*"))
    again = read_metrics(os.path.join(folder, "metrics.jsonl"))
    assert [r["step"] for r in again] == [r["step"] for r in expected]
    assert step_losses(folder) == [(r["step"], r["loss"]) for r in expected if "loss" in r]


def test_resume_refuses_a_damaged_metrics_file_and_a_model_file(run_flags, tmp_path, capsys):
    _, folder = run(run_flags + ["--max-steps", "2"], "damaged")
    checkpoint = glob.glob(os.path.join(folder, "checkpoints", "*"))[0]
    metrics = os.path.join(folder, "metrics.jsonl")
    lines = open(metrics).readlines()
    open(metrics, "w").writelines(lines[:1] + ["{not json\n"] + lines[1:])
    message = user_error(capsys, run_flags + ["--max-steps", "3", "--resume", "latest", "--name", "damaged"])
    assert f"{metrics} line 2: not a metrics record" in message
    model, tokenizer = miniclip.load_model(checkpoint)
    model_file = str(tmp_path / "model.safetensors")
    miniclip.save_model(model_file, model, tokenizer)
    message = user_error(capsys, run_flags + ["--max-steps", "3", "--resume", model_file, "--name", "from_model"])
    assert "is a model file, not a training checkpoint" in message and f"--pretrained {model_file}" in message
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10" + b"\x00" * 7 + b"{not a header}..")
    message = user_error(capsys, run_flags + ["--max-steps", "3", "--resume", str(junk), "--name", "from_junk"])
    assert f"{junk}: not a safetensors file" in message


def test_resume_latest_before_the_first_checkpoint_starts_again(run_flags, tmp_path, capsys):
    folder = tmp_path / "logs" / "early"
    os.makedirs(folder / "checkpoints")   # killed in its first epoch: steps logged, nothing saved
    (folder / "metrics.jsonl").write_text('{"step": 0, "epoch": 0, "eval": {}}\n{"step": 1, "loss": 9.0}\n')
    code, _ = run(run_flags + ["--max-steps", "2", "--resume", "latest"], "early")
    assert code == 0 and "no checkpoint in" in capsys.readouterr().out
    records = read_metrics(folder / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 2] and records[1]["loss"] != 9.0   # the old lines forgotten
    # A folder whose checkpoints are all unreadable is not started again: that would write over them.
    for name in os.listdir(folder / "checkpoints"):
        (folder / "checkpoints" / name).write_bytes(b"\x00" * 4)
    with pytest.warns(UserWarning, match="skipping"):
        message = user_error(capsys, run_flags + ["--max-steps", "3", "--resume", "latest", "--name", "early"])
    assert "no readable training checkpoint in" in message


def test_resume_refuses_data_that_shrank_below_the_saved_batch(run_flags, tmp_path, capsys):
    path = tmp_path / "pairs.tsv"
    lines = write_pairs(tmp_path, 32, "\t")
    path.write_text("\n".join(lines) + "\n")
    flags = run_flags + ["--train-data", str(path), "--batch-size", "8"]
    run(flags + ["--max-steps", "3"], "shrank")   # stops at batch 3 of the 4 batches of epoch 0
    path.write_text("\n".join(lines[:17]) + "\n")   # 16 pairs: 2 batches an epoch
    message = user_error(capsys, flags + ["--max-steps", "8", "--resume", "latest", "--name", "shrank"])
    assert "stopped at batch 3 of epoch 0, but the training data now makes 2 batches an epoch" in message


def test_pretrained_from_a_miniclip_checkpoint_keeps_its_tokenizer(run_flags, tmp_path, tiny_model, capsys):
    _, first = run(run_flags + ["--max-steps", "2"], "first")
    checkpoint = glob.glob(os.path.join(first, "checkpoints", "*"))[0]
    code, second = run(run_flags + ["--max-steps", "2", "--pretrained", checkpoint], "second")
    assert code == 0
    configs = [json.load(open(os.path.join(f, "config.json"))) for f in (first, second)]
    assert configs[1]["tokenizer_vocab_size"] == configs[0]["tokenizer_vocab_size"]
    assert configs[1]["model_config"]["text_cfg"] == configs[0]["model_config"]["text_cfg"]
    wider = json.load(open(tiny_model))
    wider["vision_cfg"]["width"] = 48
    other = tmp_path / "wider.json"
    other.write_text(json.dumps(wider))
    message = user_error(capsys, run_flags + ["--max-steps", "2", "--pretrained", checkpoint, "--model", str(other),
                                              "--name", "third"])
    assert f"--pretrained {checkpoint} does not fit --model {other}" in message and "vision_cfg" in message


@pytest.mark.parametrize("flag, value, expected", [
    ("--lr", "-1", "--lr must be greater than 0, got -1.0"),
    ("--lr", "nan", "--lr must be a finite number, got nan"),
    ("--grad-clip-norm", "-1", "--grad-clip-norm must be greater than 0"),
    ("--eps", "0", "--eps must be greater than 0"),
    ("--beta1", "-0.1", "--beta1 must be at least 0 and less than 1"),
    ("--beta2", "2", "--beta2 must be at least 0 and less than 1, got 2.0"),
    ("--wd", "-0.1", "--wd must be at least 0"),
    ("--warmup", "-5", "--warmup must be at least 0, got -5"),
    ("--workers", "-1", "--workers must be at least 0"),
    ("--seed", "-1", "--seed must be at least 0"),
    ("--max-steps", "0", "--max-steps must be at least 1"),
    ("--train-num-samples", "0", "--train-num-samples must be at least 1"),
    ("--log-every-n-steps", "0", "--log-every-n-steps must be at least 1"),
    ("--vocab-size", "300", "--vocab-size must be at least 514"),
    ("--model", "no-such-model", "--model no-such-model: unknown model"),
])
def test_every_numeric_flag_is_checked_with_one_message(run_flags, capsys, flag, value, expected):
    assert expected in user_error(capsys, run_flags + ["--max-steps", "1", flag, value])


def test_an_evaluation_that_is_not_finite_is_written_as_null(run_flags, monkeypatch):
    real_evaluate = train.evaluate

    def nan_val_loss(*args, **kwargs):
        metrics, plot_data = real_evaluate(*args, **kwargs)
        return {**metrics, "val_loss": float("nan"), "val_image_to_text_R@1": float("inf")}, plot_data

    monkeypatch.setattr(train, "evaluate", nan_val_loss)
    code, folder = run(run_flags + ["--max-steps", "2"], "nan_eval")
    assert code == 0

    def not_json(constant):
        raise AssertionError(f"metrics.jsonl holds {constant}, which is not JSON")

    with open(os.path.join(folder, "metrics.jsonl")) as f:
        records = [json.loads(line, parse_constant=not_json) for line in f]
    evals = [r["eval"] for r in records if "eval" in r]
    assert evals and all(e["val_loss"] is None and e["val_image_to_text_R@1"] is None for e in evals)
