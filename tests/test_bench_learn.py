"""python -m miniclip.bench learn: a tiny run prints and records its learning curve and thresholds."""
import json

import pytest

from miniclip import bench, bench_learn

TINY = {"embed_dim": 32, "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture
def train_flags(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return ["--model", str(path), "--batch-size", "16", "--train-num-samples", "48", "--val-num-samples", "16",
            "--zeroshot-num-samples", "12", "--workers", "1", "--vocab-size", "600", "--epochs", "2",
            "--logs", str(tmp_path / "logs")]


def test_learn_prints_the_curve_and_records_the_thresholds(train_flags, tmp_path, capsys):
    out = tmp_path / "learn.jsonl"
    bench.main(["learn", "--eval-every", "2", "--eval-samples", "12", "--label", "tiny", "--json", str(out),
                "--", *train_flags])
    printed = capsys.readouterr().out
    for threshold in ("50%", "80%", "90%"):
        assert f"reached {threshold} seen:" in printed
    assert "recipe (tiny):" in printed and "zeroshot_unseen_top1" in printed
    result = json.loads(out.read_text())
    assert result["steps"] == 6 and result["label"] == "tiny"
    # Checked before training, every 2 steps, and at the last step.
    assert [p["step"] for p in result["curve"]] == [0, 2, 4, 6]
    assert all(0 <= p["accuracy"] <= 1 for p in result["curve"])
    assert set(result["reached"]) == {"50%", "80%", "90%"}
    for reached in result["reached"].values():
        # A threshold is reached at a checked step, never before a lower one.
        assert reached is None or reached[0] in (0, 2, 4, 6)
    assert {"zeroshot_seen_top1", "zeroshot_unseen_top1", "hard_negatives_swap_colors"} <= set(result["final"])


def test_first_reaching_is_the_first_point_at_or_above():
    curve = [{"step": 0, "train_seconds": 0.0, "accuracy": 0.1}, {"step": 5, "train_seconds": 2.0, "accuracy": 0.5},
             {"step": 10, "train_seconds": 4.0, "accuracy": 0.95}]
    assert bench_learn.first_reaching(curve, 0.5) == (5, 2.0)
    assert bench_learn.first_reaching(curve, 0.9) == (10, 4.0)
    assert bench_learn.first_reaching(curve, 0.99) is None


@pytest.mark.parametrize("argv, message", [
    (["learn", "--", "--dataset", "fashion-mnist"], "shapes data"),
    (["learn", "--eval-every", "0"], "--eval-every"),
    (["step", "--lr", "1e-3"], "unrecognized arguments: --lr 1e-3"),   # a train flag given to another command
])
def test_bad_flags_are_one_message_and_exit_code_2(argv, message, capsys):
    with pytest.raises(SystemExit) as error:
        bench.main(argv)
    assert error.value.code == 2
    assert message in capsys.readouterr().err
