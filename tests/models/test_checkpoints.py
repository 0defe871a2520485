"""Loading weights: OpenCLIP .safetensors files without torch, miniclip's own, and clear errors."""
import json
import os
import stat

import numpy as np
import pytest

import miniclip
from miniclip.checkpoint import load_safetensors, save_safetensors
from miniclip.data import CLIP_MEAN, CLIP_STD
from miniclip.errors import UserError
from tests.tolerances import OPENCLIP_FEATURES

TINY = dict(embed_dim=16, vision_cfg=dict(image_size=8, patch_size=4, width=16, layers=1, head_width=8),
            text_cfg=dict(context_length=6, vocab_size=50, width=16, heads=2, layers=1))


def test_safetensors_round_trip_keeps_values_dtypes_and_metadata(tmp_path):
    """Every dtype miniclip writes, 0-d and zero-size arrays, a non-contiguous array."""
    rng = np.random.default_rng(0)
    tensors = {"a": rng.standard_normal((3, 5)).astype(np.float32), "b": np.arange(4, dtype=np.int64),
               "scalar": np.array(2.5, dtype=np.float64), "half": rng.standard_normal(7).astype(np.float16),
               "empty": np.zeros((0, 3), np.float32), "transposed": rng.standard_normal((4, 3)).T,
               "mask": np.array([True, False, True])}
    for dtype in (np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32, np.uint64):
        info = np.iinfo(dtype)
        tensors[np.dtype(dtype).name] = np.array([[info.min, 0], [1, info.max]], dtype)
    save_safetensors(tmp_path / "w.safetensors", tensors, {"note": "hello"})
    loaded, metadata = load_safetensors(tmp_path / "w.safetensors")
    assert metadata == {"note": "hello"} and list(loaded) == list(tensors)
    for key, value in tensors.items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)
    assert not list(tmp_path.glob(".tmp-*"))                      # the temporary file was renamed


def test_bf16_is_widened_to_float32_exactly(tmp_path):
    """bfloat16 is the top 16 bits of a float32: values whose low 16 bits are zero come back as they were."""
    values = np.array([[1.0, -2.5], [3.140625, 0.0]], np.float32)           # all exact in bf16
    bf16 = (values.view(np.uint32) >> 16).astype("<u2")
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}}).encode()
    (tmp_path / "bf16.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bf16.tobytes())
    loaded, _ = load_safetensors(tmp_path / "bf16.safetensors")
    assert loaded["w"].dtype == np.float32
    np.testing.assert_array_equal(loaded["w"], values)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_checkpoint_permissions_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        save_safetensors(tmp_path / "w.safetensors", {"a": np.zeros(2, np.float32)})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "w.safetensors").st_mode) == 0o666 & ~umask


@pytest.mark.oracle
def test_reads_files_written_by_the_safetensors_library_including_bf16(torch, tmp_path):
    from safetensors.torch import save_file
    values = torch.randn(4, 3)
    save_file({"x": values, "y": values.to(torch.bfloat16), "i": torch.arange(5)}, str(tmp_path / "t.safetensors"))
    loaded, _ = load_safetensors(tmp_path / "t.safetensors")
    np.testing.assert_array_equal(loaded["x"], values.numpy())
    np.testing.assert_array_equal(loaded["y"], values.to(torch.bfloat16).float().numpy())
    np.testing.assert_array_equal(loaded["i"], np.arange(5))


@pytest.mark.oracle
@pytest.mark.parametrize("quick_gelu", [False, True])
def test_openclip_safetensors_checkpoint_loads_and_gives_the_same_features(torch, open_clip, tmp_path, quick_gelu):
    from safetensors.torch import save_file
    config = dict(TINY, quick_gelu=quick_gelu)
    torch.manual_seed(0)
    theirs = open_clip.model.CLIP(config["embed_dim"], config["vision_cfg"], config["text_cfg"],
                                  quick_gelu=quick_gelu).eval()
    # As OpenCLIP's hub folders: open_clip_model.safetensors next to open_clip_config.json.
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items() if k != "attn_mask"},
              str(tmp_path / "open_clip_model.safetensors"))
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))

    ours = miniclip.create_model(config, checkpoint=str(tmp_path / "open_clip_model.safetensors")).eval()
    rng = np.random.default_rng(1)
    images = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    tokens = np.array([[48, 5, 7, 49, 0, 0], [48, 9, 49, 0, 0, 0]])
    with torch.no_grad():
        expected = theirs(torch.tensor(images), torch.tensor(tokens))
    got = ours(images, tokens)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.data, e.numpy(), **OPENCLIP_FEATURES)

    # The same weights in a model with the other activation: refused, not silently wrong.
    with pytest.raises(ValueError, match="QuickGELU|GELU"):
        miniclip.create_model(dict(config, quick_gelu=not quick_gelu),
                              checkpoint=str(tmp_path / "open_clip_model.safetensors"))


def test_state_dict_mismatches_are_one_clear_error(tmp_path):
    model = miniclip.create_model(TINY)
    state = model.state_dict()
    state["visual.proj"] = np.zeros((3, 3), np.float32)            # wrong shape
    del state["ln_final.bias"]                                      # missing
    state["visual.extra"] = np.zeros(2, np.float32)                 # unexpected
    with pytest.raises((KeyError, ValueError, RuntimeError)) as error:
        model.load_state_dict(state)
    message = str(error.value)
    assert "visual.proj" in message and "ln_final.bias" in message and "visual.extra" in message


def test_not_a_safetensors_file_is_a_clear_error(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"PK\x03\x04 this is a torch zip file, not safetensors" * 10)
    with pytest.raises(ValueError, match="safetensors"):
        miniclip.load_checkpoint(str(path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        miniclip.load_checkpoint(str(tmp_path / "missing.safetensors"))


def test_bad_inputs_name_the_expected_shape():
    model = miniclip.create_model(TINY)
    with pytest.raises(ValueError, match=r"\(batch, 3, 8, 8\)"):
        model.encode_image(np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(ValueError, match=r"\(batch, 3, 8, 8\)"):
        model.encode_image(np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"\[0, 50\).*from 0 to 50"):
        model.encode_text(np.array([[1, 50, 0]]))
    with pytest.raises(ValueError, match="7 tokens.*context length 6"):
        model.encode_text(np.ones((1, 7), np.int64))


def test_builtin_configs_build_with_openclip_shapes():
    assert {"ViT-B-32", "ViT-B-16", "RN50", "ViT-B-32-quickgelu", "RN50-quickgelu", "tiny-vit-s"} <= set(miniclip.list_models())
    with pytest.raises(ValueError, match="unknown model"):
        miniclip.create_model("ViT-Z-99")
    with pytest.raises(ValueError, match="pool_type"):
        miniclip.create_model(dict(TINY, vision_cfg=dict(TINY["vision_cfg"], pool_type="avg")))


def test_save_model_and_load_model_round_trip_weights_config_and_tokenizer(tmp_path):
    from miniclip.tokenizer import train_bpe
    tokenizer = train_bpe(["a red circle above a blue square", "a small green star"] * 5, 600,
                          context_length=32, exact=False)
    model = miniclip.create_model("tiny-vit-xs")
    path = str(tmp_path / "model.safetensors")
    miniclip.save_model(path, model, tokenizer)
    loaded, loaded_tokenizer = miniclip.load_model(path)
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key].data, value.data, err_msg=key)
    assert loaded_tokenizer.merges == tokenizer.merges
    np.testing.assert_array_equal(loaded_tokenizer(["a green square"]), tokenizer(["a green square"]))
    miniclip.save_model(path, model)                     # no tokenizer saved: None comes back
    assert miniclip.load_model(path)[1] is None


def test_load_model_needs_a_config(tmp_path):
    path = str(tmp_path / "weights.safetensors")
    save_safetensors(path, {"logit_scale": np.zeros((), np.float32)})
    with pytest.raises(ValueError, match="holds no model config"):
        miniclip.load_model(path)


def test_weights_holding_nan_or_infinity_are_refused_by_name(tmp_path):
    # A diverged run's weights compute a wrong number with no other symptom (zero-shot once printed
    # "33.33%" on them): loading them is a user error that names the tensors.
    model = miniclip.create_model("tiny-vit-xs")
    model.visual.proj.data[0, 0] = np.nan
    model.logit_scale.data[...] = np.inf
    miniclip.save_model(str(tmp_path / "diverged.safetensors"), model)
    with pytest.raises(UserError, match=r"diverged.safetensors: 2 tensors hold NaN or infinite values \(.*proj"):
        miniclip.load_model(str(tmp_path / "diverged.safetensors"))
    with pytest.raises(UserError, match="NaN or infinite"):
        miniclip.create_model("tiny-vit-xs", checkpoint=str(tmp_path / "diverged.safetensors"))


def test_the_image_statistics_travel_with_the_weights(tmp_path):
    # A model trained with --image-mean/--image-std must see its pixels normalised the same way
    # wherever it is used (zeroshot, search, export), or its features are silently wrong.
    model = miniclip.create_model("tiny-vit-xs")
    assert (model.visual.image_mean, model.visual.image_std) == (CLIP_MEAN, CLIP_STD)
    model.visual.image_mean, model.visual.image_std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    miniclip.save_model(str(tmp_path / "model.safetensors"), model)
    loaded, _ = miniclip.load_model(str(tmp_path / "model.safetensors"))
    assert (loaded.visual.image_mean, loaded.visual.image_std) == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    tensors, metadata = load_safetensors(str(tmp_path / "model.safetensors"))
    metadata["miniclip_preprocess"] = json.dumps({"mean": [0.5, 0.5], "std": [1, 1, 1]})
    save_safetensors(str(tmp_path / "bad.safetensors"), tensors, metadata)
    with pytest.raises(UserError, match="bad.safetensors: its image statistics are not 3 finite means"):
        miniclip.load_model(str(tmp_path / "bad.safetensors"))
