"""python -m miniclip.export: a miniclip checkpoint as an OpenCLIP model folder (miniclip/export.py)."""
import argparse
import json
import os

import numpy as np
import pytest

import miniclip
from miniclip import export, optim
from miniclip.checkpoint import load_safetensors
from miniclip.tokenizer import train_bpe
from miniclip.training.state import save_training_state

CONFIG = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
          "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
CAPTIONS = ["a red circle", "a blue square above a green star", "a photo of a pink cross"] * 4


@pytest.fixture(scope="module")
def training_checkpoint(tmp_path_factory):
    """A training checkpoint (weights, optimizer moments, a learned vocabulary) after one step."""
    tokenizer = train_bpe(CAPTIONS, 540, context_length=16)
    config = json.loads(json.dumps(CONFIG))
    config["text_cfg"]["vocab_size"] = tokenizer.vocab_size
    miniclip.manual_seed(0)
    model = miniclip.create_model(config)
    optimizer = optim.AdamW(model.parameters(), lr=1e-3)
    images = miniclip.tensor(np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32))
    miniclip.losses.clip_loss(*model(images, tokenizer(CAPTIONS[:3]))).backward()
    optimizer.step()
    path = str(tmp_path_factory.mktemp("run") / "epoch_1.safetensors")
    save_training_state(path, model, tokenizer, optimizer, {"step": 1, "epoch": 1, "batch": 0},
                        argparse.Namespace(seed=0))
    return path, model, tokenizer


def test_export_writes_weights_only_the_config_and_the_learned_merges(training_checkpoint, tmp_path):
    path, model, tokenizer = training_checkpoint
    assert export.main([path, str(tmp_path / "out")]) == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["bpe_merges.txt.gz", "open_clip_config.json",
                                                    "open_clip_model.safetensors"]
    weights, _ = load_safetensors(str(tmp_path / "out" / "open_clip_model.safetensors"))
    assert any(k.startswith("optimizer.") for k in load_safetensors(path)[0])       # the checkpoint has them
    assert weights.keys() == model.state_dict().keys()                                # the export does not
    for key, value in model.state_dict().items():
        assert np.array_equal(weights[key], np.asarray(value.data if hasattr(value, "data") else value))
    config = json.loads((tmp_path / "out" / "open_clip_config.json").read_text())
    assert config["model_cfg"]["text_cfg"]["vocab_size"] == tokenizer.vocab_size
    assert "init_logit_bias" not in config["model_cfg"]                              # None: OpenCLIP's default
    assert config["preprocess_cfg"]["size"] == 32
    assert config["preprocess_cfg"]["mean"] == list(model.visual.image_mean)
    assert miniclip.tokenizer.Tokenizer(str(tmp_path / "out" / "bpe_merges.txt.gz")).merges == tokenizer.merges


def test_a_model_on_openais_vocabulary_gets_no_merges_file_and_its_image_statistics_go_along(tmp_path):
    model = miniclip.create_model(CONFIG)
    model.visual.image_mean, model.visual.image_std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)   # --image-mean/-std
    miniclip.save_model(str(tmp_path / "model.safetensors"), model, miniclip.tokenizer.Tokenizer(context_length=16))
    written = export.export(str(tmp_path / "model.safetensors"), str(tmp_path / "out"))
    assert [os.path.basename(p) for p in written] == ["open_clip_config.json", "open_clip_model.safetensors"]
    preprocess = json.loads(open(written[0]).read())["preprocess_cfg"]
    assert (preprocess["mean"], preprocess["std"]) == ([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])


@pytest.mark.parametrize("problem", ["missing checkpoint", "folder not empty"])
def test_bad_arguments_are_one_message_and_exit_code_2(problem, training_checkpoint, tmp_path, capsys):
    checkpoint = training_checkpoint[0] if problem != "missing checkpoint" else str(tmp_path / "nothing.safetensors")
    (tmp_path / "out").mkdir()
    if problem == "folder not empty":
        (tmp_path / "out" / "keep.txt").write_text("precious")
    with pytest.raises(SystemExit) as exit_info:
        export.main([checkpoint, str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert ("no such file" if problem == "missing checkpoint" else "not an empty folder") in capsys.readouterr().err
    assert problem != "folder not empty" or (tmp_path / "out" / "keep.txt").read_text() == "precious"


@pytest.mark.oracle
def test_open_clip_loads_the_export_strictly_and_gives_the_same_features(training_checkpoint, tmp_path, open_clip, torch):
    path, model, tokenizer = training_checkpoint
    export.main([path, str(tmp_path / "out")])
    theirs = open_clip.create_model(f"local-dir:{tmp_path / 'out'}").eval()   # load_checkpoint(strict=True)
    their_tokenizer = open_clip.tokenizer.SimpleTokenizer(bpe_path=str(tmp_path / "out" / "bpe_merges.txt.gz"),
                                                          context_length=16)
    tokens = tokenizer(CAPTIONS)
    assert np.array_equal(their_tokenizer(CAPTIONS).numpy(), tokens)
    images = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
    model.eval()
    with torch.no_grad():
        their_images = theirs.encode_image(torch.tensor(images)).numpy()
        their_texts = theirs.encode_text(torch.tensor(tokens)).numpy()
    np.testing.assert_allclose(model.encode_image(miniclip.tensor(images)).data, their_images, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.encode_text(tokens).data, their_texts, rtol=1e-4, atol=1e-5)
