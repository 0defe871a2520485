"""Tests of miniclip/zeroshot.py: the metrics on cases with a known answer, and the command line.

- zeroshot_accuracy, retrieval_metrics and caption_vs_hard_negatives on hand-computed cases,
  ties and permuted pairs included (retrieval: features chosen so that image_features @
  text_features.T is a similarity matrix written out in the test).
- zeroshot_classifier's template ensembling with a stub text tower whose embeddings are known.
- `python -m miniclip.zeroshot` end to end: with a "colour model" stub (image feature = the mean
  colour, text feature = the colour named) the accuracy and the predictions are known; with a real
  tiny model (tiny-vit-xs, a small BPE vocabulary) the output format, odd image sizes and modes;
  and the error messages.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import miniclip
from miniclip import zeroshot
from miniclip.data import CLIP_MEAN, CLIP_STD
from miniclip.tensor import Tensor
from miniclip.tokenizer import train_bpe
from miniclip.zeroshot import (caption_vs_hard_negatives, retrieval_metrics, zeroshot_accuracy,
                               zeroshot_classifier)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- zeroshot_accuracy ------------------------------------------------------------------------

def test_zeroshot_accuracy_top1_and_top2_on_known_scores():
    classifier = np.eye(3)                            # class c's weight is e_c: scores = features
    features = np.array([[0.9, 0.5, 0.1],             # ranking 0, 1, 2   label 0: top-1 hit
                         [0.9, 0.5, 0.1],             #                   label 1: top-2 hit
                         [0.2, 0.1, 0.7],             # ranking 2, 0, 1   label 1: miss at 1 and 2
                         [0.1, 0.3, 0.2]])            # ranking 1, 2, 0   label 1: top-1 hit
    labels = [0, 1, 1, 1]
    assert zeroshot_accuracy(features, labels, classifier, topk=(1, 2, 3)) == \
        {"top1": 0.5, "top2": 0.75, "top3": 1.0}


def test_zeroshot_accuracy_ties_go_to_the_lower_class_index():
    classifier = np.eye(3)
    features = np.array([[0.5, 0.5, 0.1],             # classes 0 and 1 tie: 0 is first
                         [0.1, 0.4, 0.4]])            # classes 1 and 2 tie: 1 is first
    assert zeroshot_accuracy(features, [0, 2], classifier, topk=(1, 2)) == {"top1": 0.5, "top2": 1.0}
    # A collapsed model (every image the same feature, every class the same score) scores the
    # share of class 0, about chance, instead of a perfect 100%.
    collapsed = np.ones((4, 3))
    assert zeroshot_accuracy(collapsed, [0, 1, 2, 1], classifier) == {"top1": 0.25}


# --- retrieval_metrics --------------------------------------------------------------------------

def similarity_as_features(similarity):
    """(image_features, text_features) whose product image_features @ text_features.T is
    exactly `similarity`: the rows of the matrix against the identity."""
    similarity = np.asarray(similarity, dtype=np.float64)
    return similarity, np.eye(len(similarity))


def test_retrieval_metrics_perfect_pairs():
    features = np.eye(4)
    metrics = retrieval_metrics(features, features)
    for direction in ("image_to_text", "text_to_image"):
        assert metrics[f"{direction}_R@1"] == 1.0
        assert metrics[f"{direction}_mean_rank"] == 1.0
        assert metrics[f"{direction}_median_rank"] == 1.0


def test_retrieval_metrics_with_two_pairs_swapped():
    # Pairs 0 and 1 are confused: image 0's best text is text 1 and its own text comes second;
    # pairs 2 and 3 are right. The same holds for text -> image (the matrix is symmetric).
    similarity = [[0.5, 0.9, 0.1, 0.1],
                  [0.9, 0.5, 0.1, 0.1],
                  [0.1, 0.1, 0.9, 0.2],
                  [0.1, 0.1, 0.2, 0.9]]
    metrics = retrieval_metrics(*similarity_as_features(similarity))
    for direction in ("image_to_text", "text_to_image"):          # ranks 2, 2, 1, 1
        assert metrics[f"{direction}_R@1"] == 0.5
        assert metrics[f"{direction}_R@5"] == 1.0
        assert metrics[f"{direction}_R@10"] == 1.0
        assert metrics[f"{direction}_mean_rank"] == 1.5
        assert metrics[f"{direction}_median_rank"] == 1.0       # floor(median) as OpenCLIP


def test_retrieval_metrics_ties_count_half():
    similarity = [[0.5, 0.5, 0.1],    # image 0: a tie with text 1                -> rank 1.5
                  [0.9, 0.2, 0.2],    # image 1: 0.9 higher, a tie                -> rank 2.5
                  [0.3, 0.8, 0.1]]    # image 2: 0.3 and 0.8 higher               -> rank 3
    # text -> image reads the columns: text 0 (0.5): 0.9 higher -> 2; text 1 (0.2): 0.5 and 0.8
    # higher -> 3; text 2 (0.1): 0.2 higher and a tie with image 0's 0.1 -> 2.5.
    metrics = retrieval_metrics(*similarity_as_features(similarity))
    assert metrics["image_to_text_R@1"] == 0.0
    assert metrics["image_to_text_R@5"] == 1.0
    assert metrics["image_to_text_mean_rank"] == pytest.approx(7 / 3)
    assert metrics["image_to_text_median_rank"] == 2.0
    assert metrics["text_to_image_R@1"] == 0.0
    assert metrics["text_to_image_mean_rank"] == pytest.approx(2.5)
    assert metrics["text_to_image_median_rank"] == 2.0


def test_a_collapsed_model_retrieves_at_chance():
    features = np.ones((10, 4)) / 2          # every image and text the same vector
    metrics = retrieval_metrics(features, features)
    assert metrics["image_to_text_R@1"] == 0.0
    assert metrics["image_to_text_mean_rank"] == 5.5     # (N + 1) / 2, as with random scores


def test_retrieval_metrics_recall_at_5_and_10_with_planted_ranks():
    # S[i, j] = 1 for j < i, 0 on the diagonal, -1 above it: image i has i texts scoring above
    # its own, so its rank is i + 1: ranks 1, 2, ..., 12. By the columns, text j has the n - 1 - j
    # images i > j above its own: ranks 12, 11, ..., 1, the same set.
    n = 12
    i, j = np.indices((n, n))
    similarity = np.sign(i - j)
    metrics = retrieval_metrics(*similarity_as_features(similarity))
    for direction in ("image_to_text", "text_to_image"):
        assert metrics[f"{direction}_R@1"] == pytest.approx(1 / 12)
        assert metrics[f"{direction}_R@5"] == pytest.approx(5 / 12)
        assert metrics[f"{direction}_R@10"] == pytest.approx(10 / 12)
        assert metrics[f"{direction}_mean_rank"] == 6.5
        assert metrics[f"{direction}_median_rank"] == 6.0       # floor(6.5)


# --- caption_vs_hard_negatives -------------------------------------------------------------------

def test_caption_vs_hard_negatives():
    image = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    caption = np.array([[0.8, 0.6], [0.6, 0.8], [0.6, 0.8]])
    negatives = np.array([[[0.6, 0.8], [0.0, 1.0]],      # image 0: 0.8 beats 0.6 and 0.0  -> win
                          [[0.0, 1.0], [1.0, 0.0]],      # image 1: 0.8 loses to 1.0       -> loss
                          [[0.6, 0.8], [1.0, 0.0]]])     # image 2: a tie (1.0 = 1.0)      -> loss
    assert caption_vs_hard_negatives(image, caption, negatives) == pytest.approx(1 / 3)
    assert caption_vs_hard_negatives(image[:1], caption[:1], negatives[:1]) == 1.0


# --- zeroshot_classifier: template ensembling -----------------------------------------------------

class LookupTokenizer:
    """Texts -> (N, 1) ids: each text's position in `texts`, so a stub model can look it up."""

    def __init__(self, texts):
        self.texts = list(texts)

    def __call__(self, texts):
        return np.array([[self.texts.index(t)] for t in texts])


class LookupTextModel:
    """encode_text returns a fixed embedding per text id (normalised when asked, like CLIP)."""

    def __init__(self, embeddings):
        self.embeddings = np.asarray(embeddings, dtype=np.float64)

    def encode_text(self, ids, normalize=False):
        x = self.embeddings[np.asarray(ids)[:, 0]]                       # (N, D)
        return Tensor(x / np.linalg.norm(x, axis=-1, keepdims=True) if normalize else x)


def test_zeroshot_classifier_averages_normalised_template_embeddings():
    templates = ["a photo of a {}.", "a drawing of a {}."]
    texts = ["a photo of a cat.", "a drawing of a cat.", "a photo of a dog.", "a drawing of a dog."]
    embeddings = [[3.0, 0.0], [0.0, 1.0],      # cat: normalised (1, 0) and (0, 1) -> mean (1/2, 1/2)
                  [0.0, -2.0], [0.0, -1.0]]    # dog: both (0, -1)
    model = LookupTextModel(embeddings)
    weights = zeroshot_classifier(model, LookupTokenizer(texts), ["cat", "dog"], templates)
    # Averaging before normalising would give cat = (1.5, 0.5) / |.| = (0.949, 0.316): the longer
    # embedding would outvote the other template.
    np.testing.assert_allclose(weights, [[2 ** -0.5, 2 ** -0.5], [0.0, -1.0]], atol=1e-12)


# --- the command line with a stub "colour model": known answers ----------------------------------

COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


class ColourTokenizer:
    """Texts -> (N, 1) ids: the index in COLOURS of the colour the text names (one per text);
    remembers every text it was given."""

    def __init__(self):
        self.seen = []

    def __call__(self, texts):
        self.seen += texts
        return np.array([[next(i for i, c in enumerate(COLOURS) if c in t)] for t in texts])


class ColourModel:
    """A CLIP stand-in whose features are known: an image's is its mean RGB colour (undoing CLIP's
    normalisation), a text's is the colour it names. So a red image matches "a photo of a red."."""

    class Visual:
        image_size = 8
        image_mean, image_std = CLIP_MEAN, CLIP_STD

    visual = Visual()
    logit_scale = Tensor(np.array(np.log(100.0)))

    def encode_image(self, images, normalize=False):
        x = np.asarray(images.data, np.float64)                          # (B, 3, S, S)
        rgb = x.mean(axis=(2, 3)) * np.array(CLIP_STD) + np.array(CLIP_MEAN)   # (B, 3) in [0, 1]
        return Tensor(rgb / np.linalg.norm(rgb, axis=-1, keepdims=True) if normalize else rgb)

    def encode_text(self, ids, normalize=False):
        return Tensor(np.array(list(COLOURS.values()))[np.asarray(ids)[:, 0]])   # unit vectors


def write_image(path, colour, size=(8, 8), mode="RGB"):
    """A PNG of one colour (RGB 0-255), any size and mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).convert(mode).save(path)
    return path


@pytest.fixture
def colour_model(monkeypatch):
    """Replace the checkpoint loading of both command-line tools by the colour model."""
    tokenizer = ColourTokenizer()

    def load(args, device="cpu"):
        return ColourModel(), tokenizer

    monkeypatch.setattr(zeroshot, "load_model_and_tokenizer", load)
    monkeypatch.setattr("miniclip.search.load_model_and_tokenizer", load)
    return tokenizer


def run_main(capsys, *argv):
    """Run zeroshot.main(argv) in this process; its (stdout, stderr)."""
    zeroshot.main([str(a) for a in argv] + ["--device", "cpu", "--workers", "0"])
    return capsys.readouterr()


def run_failing(capsys, main, *argv):
    """Run a main(argv) that must fail: its exit code 2 and its stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv] + ["--device", "cpu"])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_cli_class_dir_reports_known_accuracy(tmp_path, capsys, colour_model):
    write_image(tmp_path / "red" / "a.png", (255, 0, 0))
    write_image(tmp_path / "red" / "b.png", (200, 10, 0), size=(13, 5))   # any size: resized, cropped
    write_image(tmp_path / "blue" / "a.png", (0, 0, 255), mode="RGBA")
    write_image(tmp_path / "blue" / "wrong.png", (255, 0, 0))              # a red image labelled blue
    out = run_main(capsys, "--checkpoint", "unused", "--class-dir", tmp_path,
                   "--templates", "a photo of a {}.", "a drawing of a {}.").out
    lines = out.splitlines()
    assert lines[0].startswith("zero-shot: 4 images, 2 classes, 2 prompt templates per class")
    assert lines[1].split() == ["class", "images", "top-1"]
    assert lines[2].split() == ["blue", "2", "50.0%"]
    assert lines[3].split() == ["red", "2", "100.0%"]
    assert "top-1 accuracy: 75.00%  (3/4; chance 50.00%)" in out
    assert "top-5 accuracy: 100.00%  (4/4; all 2 classes fit in the top 5)" in out
    # Each class is embedded once per template, the class name put into the template.
    assert sorted(colour_model.seen) == ["a drawing of a blue.", "a drawing of a red.",
                                         "a photo of a blue.", "a photo of a red."]


def test_cli_classes_with_labelled_subfolders(tmp_path, capsys, colour_model):
    write_image(tmp_path / "green" / "1.png", (0, 255, 0))
    write_image(tmp_path / "blue" / "1.png", (0, 255, 200))     # greener than blue: a top-1 miss
    write_image(tmp_path / "blue" / "2.png", (10, 0, 250))
    out = run_main(capsys, "--checkpoint", "unused", "--classes", "red, green ,blue", "--images", tmp_path,
                   "--top-k", "2").out
    lines = out.splitlines()
    assert "3 images, 3 classes, 5 prompt templates" in lines[0]    # CLIP's 5 default templates
    assert lines[2].split() == ["green", "1", "100.0%"]             # red has no images: no row
    assert lines[3].split() == ["blue", "2", "50.0%"]
    assert lines[4] == "top-1 accuracy: 66.67%  (2/3; chance 33.33%)"
    assert lines[5] == "top-2 accuracy: 100.00%  (3/3)"


def test_cli_flat_folder_prints_predictions(tmp_path, capsys, colour_model):
    write_image(tmp_path / "x.png", (250, 5, 5))
    write_image(tmp_path / "y.png", (5, 5, 250), size=(3, 40))
    out = run_main(capsys, "--checkpoint", "unused", "--classes", "red,green,blue", "--images", tmp_path,
                   "--top-k", "2").out
    lines = out.splitlines()
    assert lines[0].startswith("zero-shot: 2 images, 3 classes")
    assert "accuracy" not in out
    for line, path, expected in zip(lines[1:], ("x.png", "y.png"), ("red", "blue")):
        image, predictions = line.split("\t")
        assert image == str(tmp_path / path)
        names_and_probs = predictions.split("  ")
        assert len(names_and_probs) == 2                              # --top-k 2
        best, probability = names_and_probs[0].rsplit(" ", 1)
        assert best == expected and float(probability) > 0.9         # softmax(100 * cosine)


def test_cli_skip_bad_samples_leaves_out_unreadable_images_and_says_so(tmp_path, capsys, colour_model):
    """Was: one bad image stopped the command, with no way to skip it."""
    write_image(tmp_path / "red" / "a.png", (255, 0, 0))
    (tmp_path / "red" / "b.png").write_bytes(b"not a png")
    write_image(tmp_path / "blue" / "a.png", (0, 0, 255))
    write_image(tmp_path / "blue" / "b.png", (255, 0, 0))                # a red image labelled blue
    assert f"cannot read image {tmp_path / 'red' / 'b.png'}" in run_failing(
        capsys, zeroshot.main, "--checkpoint", "unused", "--class-dir", tmp_path)
    with pytest.warns(UserWarning, match=r"skipped 1 bad samples in epoch 0"):
        out = run_main(capsys, "--checkpoint", "unused", "--class-dir", tmp_path, "--skip-bad-samples").out
    lines = out.splitlines()
    assert lines[0].startswith("zero-shot: 3 images, 2 classes")
    assert lines[2].split() == ["blue", "2", "50.0%"] and lines[3].split() == ["red", "1", "100.0%"]
    assert "top-1 accuracy: 66.67%  (2/3; chance 50.00%)" in out
    bad = tmp_path / "red" / "b.png"
    assert lines[-1] == (f"skipped 1 unreadable images (--skip-bad-samples); the first: {bad}: "
                         f"cannot read image {bad}: cannot identify image file '{bad}'")


def test_cli_skip_bad_samples_keeps_each_prediction_with_its_image(tmp_path, capsys, colour_model):
    write_image(tmp_path / "a.png", (250, 5, 5))
    (tmp_path / "b.png").write_bytes(b"")
    write_image(tmp_path / "c.png", (5, 5, 250))
    with pytest.warns(UserWarning, match="skipped 1 bad samples"):
        out = run_main(capsys, "--checkpoint", "unused", "--classes", "red,blue", "--images", tmp_path,
                       "--top-k", "1", "--batch-size", "2", "--skip-bad-samples").out
    lines = out.splitlines()
    assert lines[0].startswith("zero-shot: 2 images, 2 classes")
    assert [line.split("\t")[0] for line in lines[1:3]] == [str(tmp_path / "a.png"), str(tmp_path / "c.png")]
    assert [line.split("\t")[1].split()[0] for line in lines[1:3]] == ["red", "blue"]
    assert lines[3].startswith(f"skipped 1 unreadable images (--skip-bad-samples); the first: {tmp_path / 'b.png'}")


def test_cli_too_many_bad_images_is_an_error_even_when_skipping(tmp_path, capsys, colour_model):
    write_image(tmp_path / "red" / "a.png", (255, 0, 0))
    for name in ("b", "c"):
        (tmp_path / "red" / f"{name}.png").write_bytes(b"not a png")
    write_image(tmp_path / "blue" / "a.png", (0, 0, 255))
    (tmp_path / "blue" / "b.png").write_bytes(b"not a png")
    err = run_failing(capsys, zeroshot.main, "--checkpoint", "unused", "--class-dir", tmp_path, "--skip-bad-samples")
    assert err.startswith("python -m miniclip.zeroshot: error: too many bad samples to skip: 3 of the 5 samples "
                          f"tried in epoch 0 are bad; the first: {tmp_path / 'blue' / 'b.png'}: cannot read image")


def test_cli_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    """Only user errors become one line and exit code 2; anything else is a bug and is raised."""
    write_image(tmp_path / "red" / "a.png", (255, 0, 0))
    write_image(tmp_path / "blue" / "a.png", (0, 0, 255))

    def broken(args, device="cpu"):
        raise ValueError("a bug, not the user's mistake")

    monkeypatch.setattr(zeroshot, "load_model_and_tokenizer", broken)
    with pytest.raises(ValueError, match="a bug"):
        zeroshot.main(["--checkpoint", "unused", "--class-dir", str(tmp_path), "--device", "cpu"])


# --- the command line with a real tiny model ----------------------------------------------------

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """(checkpoint with a tokenizer, checkpoint without one, the tokenizer's merges file) of a
    randomly initialised tiny-vit-xs (32x32 images, context 32) and a ~600-token BPE."""
    folder = tmp_path_factory.mktemp("tiny")
    miniclip.manual_seed(0)
    model = miniclip.create_model("tiny-vit-xs")
    tokenizer = train_bpe(["a photo of a red circle.", "a blue square.", "a green triangle."],
                          vocab_size=600, context_length=32, exact=False)
    miniclip.save_model(str(folder / "model.safetensors"), model, tokenizer)
    miniclip.save_model(str(folder / "no_tokenizer.safetensors"), model)
    tokenizer.save(str(folder / "merges.txt"))
    return folder / "model.safetensors", folder / "no_tokenizer.safetensors", folder / "merges.txt"


def test_cli_with_a_tiny_model(tmp_path, capsys, tiny_checkpoint):
    checkpoint, _, _ = tiny_checkpoint
    # Sizes and modes the eval transform must handle: larger, smaller, non-square, grey, RGBA, JPEG.
    write_image(tmp_path / "red_circle" / "a.png", (255, 0, 0), size=(50, 50))
    write_image(tmp_path / "red_circle" / "b.jpg", (255, 0, 0), size=(7, 90))
    write_image(tmp_path / "blue_square" / "a.png", (0, 0, 255), size=(32, 32), mode="L")
    write_image(tmp_path / "blue_square" / "b.png", (0, 0, 255), size=(100, 33), mode="RGBA")
    out = run_main(capsys, "--checkpoint", checkpoint, "--class-dir", tmp_path,
                   "--templates", "a photo of a {}.").out
    assert out.splitlines()[0] == (f"zero-shot: 4 images, 2 classes, 1 prompt templates per class "
                                   f"({checkpoint})")
    assert "top-1 accuracy: " in out and "top-5 accuracy: 100.00%" in out
    top1 = float(out.split("top-1 accuracy: ")[1].split("%")[0])
    assert top1 in (0.0, 25.0, 50.0, 75.0, 100.0)


def test_cli_tokenizer_from_a_merges_file(tmp_path, capsys, tiny_checkpoint):
    _, no_tokenizer, merges = tiny_checkpoint
    write_image(tmp_path / "one.png", (255, 0, 0), size=(40, 30))
    # Without a saved tokenizer or --tokenizer: OpenAI's vocabulary (this model has its 49,408 embeddings).
    out = run_main(capsys, "--checkpoint", no_tokenizer, "--classes", "red,blue", "--images", tmp_path).out
    assert out.splitlines()[1].startswith(str(tmp_path / "one.png") + "\t")
    out = run_main(capsys, "--checkpoint", no_tokenizer, "--tokenizer", merges, "--classes", "red,blue",
                   "--images", tmp_path, "--templates", "{}").out
    assert out.splitlines()[1].startswith(str(tmp_path / "one.png") + "\t")


def test_cli_model_and_pretrained_as_in_openclip(tmp_path, capsys):
    # OpenCLIP's pair: an architecture and its weights (a tag, or a file: a tag needs the hub, see
    # tests/models/test_pretrained.py); with no saved tokenizer, OpenAI's vocabulary is used.
    miniclip.manual_seed(0)
    miniclip.save_model(str(tmp_path / "weights.safetensors"), miniclip.create_model("tiny-vit-xs"))
    write_image(tmp_path / "images" / "red" / "1.png", (255, 0, 0))
    write_image(tmp_path / "images" / "blue" / "1.png", (0, 0, 255))
    out = run_main(capsys, "--model", "tiny-vit-xs", "--pretrained", tmp_path / "weights.safetensors",
                   "--class-dir", tmp_path / "images", "--templates", "a photo of a {}.").out
    assert out.splitlines()[0].endswith(f"(tiny-vit-xs {tmp_path / 'weights.safetensors'})")
    assert "top-1 accuracy: " in out

    def error(*argv):
        return run_failing(capsys, zeroshot.main, *argv, "--class-dir", tmp_path / "images")

    assert "needs --model" in error("--pretrained", tmp_path / "weights.safetensors")
    assert "give --checkpoint FILE, or --model NAME --pretrained" in error("--model", "tiny-vit-xs")
    assert "--model goes with --pretrained" in error("--model", "tiny-vit-xs", "--checkpoint",
                                                     tmp_path / "weights.safetensors")
    assert "not a file and not a tag of tiny-vit-xs" in error("--model", "tiny-vit-xs", "--pretrained", "openai")
    assert "parameters" in error("--model", "tiny-vit-xs", "--pretrained", tmp_path / "weights.safetensors",
                                 "--max-parameters", "1000")
    config = miniclip.models.load_config("tiny-vit-xs")
    config["text_cfg"]["vocab_size"] = 600                     # a learned vocabulary, not saved with it
    miniclip.save_model(str(tmp_path / "small_vocab.safetensors"), miniclip.create_model(config))
    assert "the tokenizer has 49408 tokens but the model only 600" in error(
        "--checkpoint", tmp_path / "small_vocab.safetensors")


# --- errors ----------------------------------------------------------------------------------------

def test_cli_errors(tmp_path, capsys, tiny_checkpoint):
    checkpoint, _, _ = tiny_checkpoint
    write_image(tmp_path / "tree" / "red" / "1.png", (255, 0, 0))
    images = tmp_path / "tree"
    write_image(tmp_path / "two" / "red" / "1.png", (255, 0, 0))
    write_image(tmp_path / "two" / "blue" / "1.png", (0, 0, 255))

    def error(*argv):
        return run_failing(capsys, zeroshot.main, *argv)

    assert "--checkpoint missing.safetensors: no such file" in error(
        "--checkpoint", "missing.safetensors", "--class-dir", tmp_path / "two")
    assert "--tokenizer nope.txt: no such file" in error(
        "--checkpoint", checkpoint, "--tokenizer", "nope.txt", "--classes", "red,blue", "--images", images)
    (tmp_path / "not_merges.txt").write_text("hello\n")
    assert f"--tokenizer {tmp_path / 'not_merges.txt'}: " in error(
        "--checkpoint", checkpoint, "--tokenizer", tmp_path / "not_merges.txt", "--classes", "red,blue",
        "--images", images)
    assert "folder 'red' is not one of the --classes (green, blue)" in error(
        "--checkpoint", checkpoint, "--classes", "green,blue", "--images", images)
    assert "--classes needs --images DIR" in error("--checkpoint", checkpoint, "--classes", "red,blue")
    assert "--images goes with --classes" in error(
        "--checkpoint", checkpoint, "--class-dir", images, "--images", images)
    assert "needs at least 2 classes" in error("--checkpoint", checkpoint, "--class-dir", images)
    assert "names red more than once" in error(
        "--checkpoint", checkpoint, "--classes", "red,blue,red", "--images", images)
    assert "template 'a photo' has no '{}'" in error(
        "--checkpoint", checkpoint, "--classes", "red,blue", "--images", images, "--templates", "a photo")
    assert "--images nowhere: no such folder" in error(
        "--checkpoint", checkpoint, "--classes", "red,blue", "--images", "nowhere")
    assert "--class-dir nowhere: no such folder" in error("--checkpoint", checkpoint, "--class-dir", "nowhere")

    (tmp_path / "empty").mkdir()
    assert "holds no image files" in error(
        "--checkpoint", checkpoint, "--classes", "red,blue", "--images", tmp_path / "empty")
    (tmp_path / "tree" / "blue").mkdir()                                 # an empty class folder
    assert f"class folder {images / 'blue'} has no image files" in error(
        "--checkpoint", checkpoint, "--class-dir", images)
    write_image(images / "blue" / "1.png", (0, 0, 255))
    write_image(images / "loose.png", (0, 0, 255))
    assert "mixes class subfolders with loose images (loose.png" in error(
        "--checkpoint", checkpoint, "--classes", "red,blue", "--images", images)
    os.remove(images / "loose.png")

    (images / "blue" / "broken.png").write_bytes(b"not a png")
    assert f"cannot read image {images / 'blue' / 'broken.png'}" in error(
        "--checkpoint", checkpoint, "--class-dir", images)


def test_python_dash_m_runs_main(tmp_path):
    """`python -m miniclip.zeroshot` reaches main(): an error exits with 2 and a one-line message."""
    result = subprocess.run([sys.executable, "-m", "miniclip.zeroshot", "--checkpoint", "model.safetensors",
                             "--classes", "a,b", "--images", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr == f"python -m miniclip.zeroshot: error: --images {tmp_path} holds no image files\n"
