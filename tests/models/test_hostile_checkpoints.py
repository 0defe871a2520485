"""Hostile checkpoints: every way a .safetensors file can lie is refused with one UserError that
names the file and the problem, before any tensor data is read, and memory stays bounded by the
file's size (miniclip/checkpoint.py says what is checked and why)."""
import json
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import miniclip
from miniclip import checkpoint
from miniclip.checkpoint import load_safetensors, read_safetensors_metadata
from miniclip.errors import UserError


def write_file(path, header, data=b"", header_length=None):
    """A safetensors file with the given header (a dict, or raw bytes) and data region."""
    header_bytes = header if isinstance(header, bytes) else json.dumps(header).encode()
    length = len(header_bytes) if header_length is None else header_length
    path.write_bytes(struct.pack("<Q", length) + header_bytes + data)
    return path


def f32(begin, end, shape=None):
    return {"dtype": "F32", "shape": [(end - begin) // 4] if shape is None else shape,
            "data_offsets": [begin, end]}


# (id, header, data, what the message must say)
HOSTILE = [
    ("header-not-utf8", b"\xff\xfe{}", b"", "not valid JSON"),
    ("header-not-json", b"{not json", b"", "not valid JSON"),
    ("header-empty", b"", b"", "not valid JSON"),
    ("header-a-list", b"[1, 2]", b"", "JSON list, not an object"),
    ("header-a-string", b'"F32"', b"", "JSON str, not an object"),
    ("name-twice", b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
                   b'"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}', b"xy", "'a' appears twice"),
    ("entry-not-object", {"a": [0, 16]}, bytes(16), "tensor 'a': expected an object"),
    ("entry-no-offsets", {"a": {"dtype": "F32", "shape": [4]}}, bytes(16), "tensor 'a': expected an object"),
    ("dtype-unknown", {"a": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}, bytes(4),
     "tensor 'a': dtype 'F8_E4M3' is not one miniclip reads"),
    ("dtype-not-string", {"a": {"dtype": 4, "shape": [4], "data_offsets": [0, 16]}}, bytes(16), "dtype 4"),
    ("shape-negative", {"a": f32(0, 16, [-1, 128])}, bytes(16), r"shape \[-1, 128\] is not a list"),
    ("shape-float", {"a": f32(0, 16, [4.0])}, bytes(16), r"shape \[4.0\]"),
    ("shape-bool", {"a": f32(0, 4, [True])}, bytes(4), r"shape \[True\]"),
    ("shape-not-list", {"a": f32(0, 16, 4)}, bytes(16), "shape 4 is not a list"),
    ("shape-too-many-dims", {"a": f32(0, 4, [1] * 40)}, bytes(4), "at most 32"),
    ("shape-too-many-bytes", {"a": f32(0, 16, [1000])}, bytes(16), r"hold 16 bytes, but shape \[1000\] of F32 is 4000"),
    ("shape-too-few-bytes", {"a": f32(0, 16, [2])}, bytes(16), r"hold 16 bytes, but shape \[2\] of F32 is 8"),
    ("offsets-negative", {"a": f32(-16, 0, [4])}, bytes(16), r"data_offsets \[-16, 0\] is not \[begin, end\]"),
    ("offsets-reversed", {"a": f32(16, 0, [4])}, bytes(16), r"data_offsets \[16, 0\] end before they begin"),
    ("offsets-one-number", {"a": {"dtype": "F32", "shape": [4], "data_offsets": [16]}}, bytes(16), "not \\[begin, end\\]"),
    ("offsets-floats", {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0.0, 16.0]}}, bytes(16), "not \\[begin, end\\]"),
    ("offsets-overlap", {"a": f32(0, 16), "b": f32(8, 24)}, bytes(24), "tensor 'b' .* overlaps the tensor before it"),
    ("offsets-alias", {f"t{i}": f32(0, 400) for i in range(100)}, bytes(400), "overlaps the tensor before it"),
    ("offsets-gap", {"a": f32(0, 16), "b": f32(24, 40)}, bytes(40), "tensor 'b' .* leaves a gap"),
    ("offsets-do-not-cover-the-end", {"a": f32(0, 16)}, bytes(24), "8 bytes belong to no tensor"),
    ("offsets-past-the-end", {"a": f32(0, 16), "b": f32(16, 32)}, bytes(24), "tensor 'b' .* past the end"),
    ("metadata-a-list", {"__metadata__": ["a"]}, b"", "__metadata__ must map strings to strings"),
    ("metadata-not-strings", {"__metadata__": {"step": 3}}, b"", r"__metadata__\['step'\] must be a string"),
    ("metadata-nested", {"__metadata__": {"cfg": {"a": "b"}}}, b"", r"__metadata__\['cfg'\] must be a string"),
]


@pytest.mark.parametrize("header, data, message", [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE])
@pytest.mark.parametrize("reader", ["load_safetensors", "read_safetensors_metadata", "load_checkpoint"])
def test_hostile_header_is_refused_naming_the_file_and_the_problem(tmp_path, reader, header, data, message):
    path = write_file(tmp_path / "hostile.safetensors", header, data)
    read = {"load_safetensors": load_safetensors, "read_safetensors_metadata": read_safetensors_metadata,
            "load_checkpoint": miniclip.load_checkpoint}[reader]
    with pytest.raises(UserError, match=message) as error:
        read(str(path))
    assert str(path) in str(error.value)


@pytest.mark.parametrize("content, message", [
    (b"", "too short to be a safetensors file \\(0 bytes\\)"),
    (b"\x10\x00\x00", "too short"),
    (struct.pack("<Q", 64) + b'{"a": 1}', "header length 64 is more than the file holds, 8 bytes"),
    (struct.pack("<Q", 2 ** 60) + b"{}", "header length 1152921504606846976 is more than the file holds"),
    (struct.pack("<Q", 2 ** 64 - 1) + b"{}", "header length 18446744073709551615"),
], ids=["empty", "truncated-length", "length-past-the-end", "length-2-to-the-60", "length-max"])
@pytest.mark.parametrize("read", [load_safetensors, read_safetensors_metadata])
def test_truncated_file_or_impossible_header_length_is_refused(tmp_path, read, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        read(path)


def test_header_longer_than_the_limit_is_refused(tmp_path, monkeypatch):
    path = write_file(tmp_path / "big-header.safetensors", {"__metadata__": {"pad": "x" * 200}})
    monkeypatch.setattr(checkpoint, "MAX_HEADER_BYTES", 100)
    with pytest.raises(UserError, match="is more than the limit, 100 bytes"):
        read_safetensors_metadata(path)


def test_bool_tensor_with_other_bytes_is_refused(tmp_path):
    path = write_file(tmp_path / "b.safetensors", {"m": {"dtype": "BOOL", "shape": [3], "data_offsets": [0, 3]}},
                      bytes([0, 1, 2]))
    with pytest.raises(UserError, match="tensor 'm': a BOOL tensor holds bytes other than 0 and 1"):
        load_safetensors(path)


def test_header_checks_accept_what_the_format_allows(tmp_path):
    """Tensors in any order in the header, zero-size tensors, 0-d tensors, no or null metadata."""
    data = np.arange(6, dtype="<f4").tobytes() + np.array(7, "<i8").tobytes()
    path = write_file(tmp_path / "ok.safetensors", {
        "__metadata__": None, "scalar": {"dtype": "I64", "shape": [], "data_offsets": [24, 32]},
        "empty": {"dtype": "F32", "shape": [0, 5], "data_offsets": [24, 24]}, "x": f32(0, 24, [2, 3])}, data)
    tensors, metadata = load_safetensors(path)
    assert metadata == {} and list(tensors) == ["scalar", "empty", "x"]
    np.testing.assert_array_equal(tensors["x"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert tensors["scalar"].shape == () and tensors["scalar"] == 7 and tensors["empty"].shape == (0, 5)


PEAK_MEMORY = textwrap.dedent("""
    import sys, tracemalloc
    from miniclip.checkpoint import load_safetensors
    from miniclip.errors import UserError
    tracemalloc.start()
    try:
        load_safetensors(sys.argv[1])
        outcome = "loaded"
    except UserError as error:
        outcome = "refused: " + str(error)
    print(tracemalloc.get_traced_memory()[1])
    print(outcome)
""")


def peak_memory_of_loading(path):
    """(peak bytes traced while load_safetensors(path) ran in a fresh interpreter, its outcome)."""
    result = subprocess.run([sys.executable, "-c", PEAK_MEMORY, str(path)], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert result.returncode == 0, result.stderr
    peak, outcome = result.stdout.split("\n", 1)
    return int(peak), outcome.strip()


def test_memory_stays_below_twice_the_file_size(tmp_path):
    """100 names aliasing one 20 MB region: the old reader took ~2 GB (the file, then 100 copies);
    now it is refused from the header. A valid 20 MB file takes one copy of each tensor."""
    size = 20_000_000
    hostile = write_file(tmp_path / "alias.safetensors", {f"t{i}": f32(0, size) for i in range(100)})
    with open(hostile, "ab") as f:
        f.truncate(os.path.getsize(hostile) + size)              # 20 MB of zeros, sparse on disk
    peak, outcome = peak_memory_of_loading(hostile)
    assert outcome.startswith("refused") and "overlaps the tensor before it" in outcome, outcome
    assert peak < 2 * os.path.getsize(hostile), f"peak {peak} bytes for a {os.path.getsize(hostile)}-byte file"

    valid = write_file(tmp_path / "valid.safetensors", {f"t{i}": f32(i * size // 4, (i + 1) * size // 4)
                                                         for i in range(4)})
    with open(valid, "ab") as f:
        f.truncate(os.path.getsize(valid) + size)
    peak, outcome = peak_memory_of_loading(valid)
    assert outcome == "loaded"
    assert size <= peak < 2 * os.path.getsize(valid), f"peak {peak} bytes for a {os.path.getsize(valid)}-byte file"


# Configs: a checkpoint's miniclip_config metadata is checked before anything is built or read.
TINY = dict(embed_dim=16, vision_cfg=dict(image_size=8, patch_size=4, width=16, layers=1, head_width=8),
            text_cfg=dict(context_length=6, vocab_size=50, width=16, heads=2, layers=1))
TINY_RN = dict(embed_dim=16, vision_cfg=dict(image_size=64, layers=[1, 2, 1, 1], width=8, head_width=64),
               text_cfg=dict(context_length=6, vocab_size=50, width=16, heads=2, layers=1))


def changed(config, section, **values):
    """A copy of `config` with values changed in one section (None for the top level)."""
    config = json.loads(json.dumps(config))
    (config if section is None else config[section]).update(values)
    return config


BAD_CONFIGS = [
    ("text-layers-1e6", changed(TINY, "text_cfg", layers=10 ** 6), r"text_cfg.layers must be an integer from 1 to 1000, got 1000000"),
    ("vision-layers-0", changed(TINY, "vision_cfg", layers=0), r"vision_cfg.layers must be an integer from 1"),
    ("vision-layers-float", changed(TINY, "vision_cfg", layers=2.0), r"vision_cfg.layers must be an integer .* got 2.0"),
    ("patch-size-0", changed(TINY, "vision_cfg", patch_size=0), r"vision_cfg.patch_size must be an integer >= 1, got 0"),
    ("image-size-negative", changed(TINY, "vision_cfg", image_size=-32), r"vision_cfg.image_size must be an integer >= 1, got -32"),
    ("image-size-not-multiple", changed(TINY, "vision_cfg", image_size=10), r"image_size 10 must be a multiple of patch_size 4"),
    ("width-string", changed(TINY, "vision_cfg", width="16"), r"vision_cfg.width must be an integer >= 1, got '16'"),
    ("head-width-not-divisor", changed(TINY, "vision_cfg", head_width=5), r"width 16 must be a multiple of head_width 5"),
    ("vision-mlp-ratio-0", changed(TINY, "vision_cfg", mlp_ratio=0), r"vision_cfg.mlp_ratio must be a number > 0"),
    ("mlp-ratio-string", changed(TINY, "text_cfg", mlp_ratio="4"), r"text_cfg.mlp_ratio must be a number > 0"),
    ("mlp-ratio-huge", changed(TINY, "text_cfg", mlp_ratio=1e308), r"text_cfg.mlp_ratio must be a number > 0"),
    ("mlp-ratio-tiny", changed(TINY, "text_cfg", mlp_ratio=0.01), r"int\(width \* mlp_ratio\) >= 1"),
    ("heads-not-divisor", changed(TINY, "text_cfg", heads=3), r"text_cfg.width 16 must be a multiple of heads 3"),
    ("context-length-0", changed(TINY, "text_cfg", context_length=0), r"text_cfg.context_length must be an integer >= 1"),
    ("vocab-size-bool", changed(TINY, "text_cfg", vocab_size=True), r"text_cfg.vocab_size must be an integer >= 1, got True"),
    ("embed-dim-0", changed(TINY, None, embed_dim=0), r"embed_dim must be an integer >= 1, got 0"),
    ("embed-dim-missing", {k: v for k, v in TINY.items() if k != "embed_dim"}, "missing 'embed_dim'"),
    ("quick-gelu-string", changed(TINY, None, quick_gelu="yes"), r"quick_gelu must be true or false, got 'yes'"),
    ("logit-scale-string", changed(TINY, None, init_logit_scale="2.6"), r"init_logit_scale must be a finite number or null"),
    ("logit-bias-infinite", changed(TINY, None, init_logit_bias=float("inf")), r"init_logit_bias must be a finite number"),
    ("resnet-3-stages", changed(TINY_RN, "vision_cfg", layers=[1, 1, 1]), r"a list of 4 block counts"),
    ("resnet-stage-0-blocks", changed(TINY_RN, "vision_cfg", layers=[1, 0, 1, 1]), r"vision_cfg.layers\[1\] must be an integer from 1"),
    ("resnet-image-size-48", changed(TINY_RN, "vision_cfg", image_size=48), r"image_size 48 must be a multiple of 32"),
    ("resnet-width-1", changed(TINY_RN, "vision_cfg", width=1), r"vision_cfg.width must be an integer >= 2"),
    ("resnet-head-width", changed(TINY_RN, "vision_cfg", head_width=48), r"head_width 48 must divide .* 256"),
    ("too-many-parameters", changed(TINY, "text_cfg", vocab_size=10 ** 9),
     r"this model has 16,000,\d{3},\d{3} parameters \(64.0 GB in float32\), more than the limit of 3,000,000,000"),
    ("vision-cfg-a-list", changed(TINY, None, vision_cfg=[1, 2]), r"vision_cfg must be a JSON object, got list"),
    ("config-a-list", [1, 2], r"a model config is a JSON object, got list"),
    ("unknown-field", changed(TINY, "text_cfg", depth=3), r"text_cfg: unknown field 'depth'"),
    ("unsupported-value", changed(TINY, "vision_cfg", pool_type="avg"), r"pool_type='avg' is not supported"),
]


def model_file(path, config):
    """TINY's weights with `config` (any JSON value) as the miniclip_config metadata."""
    tensors = miniclip.models.model_tensors(miniclip.create_model(TINY))
    checkpoint.save_safetensors(path, tensors, {"miniclip_config": json.dumps(config)})
    return str(path)


@pytest.mark.parametrize("config, message", [case[1:] for case in BAD_CONFIGS], ids=[case[0] for case in BAD_CONFIGS])
def test_bad_config_in_a_checkpoint_is_refused_naming_the_file_and_the_field(tmp_path, config, message):
    path = model_file(tmp_path / "model.safetensors", config)
    for load in (miniclip.load_checkpoint, miniclip.load_model):
        with pytest.raises(UserError, match=message) as error:
            load(path)
        assert f"{path} (its miniclip_config metadata)" in str(error.value)
    if isinstance(config, dict):                    # the same checks for configs given directly
        with pytest.raises(UserError, match=message):
            miniclip.create_model(config)


def test_config_metadata_that_is_not_json_is_refused(tmp_path):
    path = str(tmp_path / "model.safetensors")
    checkpoint.save_safetensors(path, {"x": np.zeros(1, np.float32)}, {"miniclip_config": "{embed_dim: 16"})
    with pytest.raises(UserError, match=r"\(its miniclip_config metadata\): not JSON \(Expecting property name"):
        miniclip.load_checkpoint(path)


def test_config_file_that_is_not_json_is_refused_with_its_line(tmp_path):
    path = tmp_path / "model.json"
    path.write_text('{\n  "embed_dim": 16,\n  "vision_cfg": {,}\n}')
    with pytest.raises(UserError, match=rf"{path}: not a JSON model config \(.* line 3 column 18"):
        miniclip.create_model(str(path))
    with pytest.raises(UserError, match="unknown model 'ViT-Z-99'"):
        miniclip.create_model("ViT-Z-99")


def test_max_parameters_can_be_raised_or_lowered(tmp_path):
    path = model_file(tmp_path / "model.safetensors", TINY)
    count = miniclip.models.config.parameter_count(miniclip.models.config.load_config(TINY))
    for load in (miniclip.load_checkpoint, miniclip.load_model):
        with pytest.raises(UserError, match=f"more than the limit of {count - 1:,}"):
            load(path, max_parameters=count - 1)
        load(path, max_parameters=count)
    with pytest.raises(UserError, match="more than the limit of 1,000"):
        miniclip.create_model(TINY, max_parameters=1000)
    big = changed(TINY, "text_cfg", vocab_size=10 ** 9)
    assert miniclip.models.config.load_config(big, max_parameters=10 ** 11)["text_cfg"]["vocab_size"] == 10 ** 9


def test_bad_tokenizer_merges_are_refused(tmp_path):
    path = str(tmp_path / "model.safetensors")
    checkpoint.save_safetensors(path, {"x": np.zeros(1, np.float32)},
                                {"miniclip_bpe_merges": "a b\nc d e\nf g"})
    with pytest.raises(UserError, match=r"line 2 of its miniclip_bpe_merges metadata is not a merge"):
        miniclip.models.load_tokenizer(path, 8)


# The parameter count the limit uses is create_model's, computed from the config alone.
ODD_CONFIGS = {"tiny": TINY, "tiny-rn": TINY_RN,
               "odd": dict(embed_dim=7, init_logit_bias=-10.0,
                           vision_cfg=dict(image_size=15, patch_size=5, width=6, layers=2, head_width=3, mlp_ratio=2.5),
                           text_cfg=dict(context_length=5, vocab_size=11, width=9, heads=3, layers=3, mlp_ratio=1.3))}


@pytest.mark.parametrize("name", ["tiny-vit-xs", "tiny-vit-s", "tiny-rn-xs", *ODD_CONFIGS])
def test_parameter_count_is_create_models_count(name):
    model = miniclip.create_model(ODD_CONFIGS.get(name, name))
    real = sum(int(np.prod(p.shape)) for p in model.parameters())
    assert miniclip.models.config.parameter_count(model.config) == real


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in miniclip.list_models() if not n.startswith("tiny")])
def test_parameter_count_is_create_models_count_for_the_big_builtin_configs(name):
    test_parameter_count_is_create_models_count(name)


def test_parameter_count_matches_the_published_counts():
    """openai/CLIP's and OpenCLIP's counts; ViT-bigG-14 (OpenCLIP's largest) fits the default limit."""
    count = miniclip.models.config.parameter_count
    load = miniclip.models.config.load_config
    assert count(load("ViT-B-32")) == 151_277_313 and count(load("RN50")) == 102_007_137
    bigg = dict(embed_dim=1280, vision_cfg=dict(image_size=224, layers=48, width=1664, head_width=104,
                                                mlp_ratio=4.9231, patch_size=14),
                text_cfg=dict(context_length=77, vocab_size=49408, width=1280, heads=20, layers=32))
    assert round(count(load(bigg)) / 1e6, 2) == 2539.57


@pytest.mark.oracle
def test_parameter_count_matches_openclip_for_every_config_miniclip_supports(torch, open_clip):
    """Every OpenCLIP model config miniclip can build, counted by OpenCLIP on torch's meta device
    (no memory); the ones miniclip refuses are refused for an unsupported option only."""
    folder = os.path.join(os.path.dirname(open_clip.__file__), "model_configs")
    counted = 0
    for name in sorted(os.listdir(folder)):
        raw = json.load(open(os.path.join(folder, name)))
        try:
            config = miniclip.models.config.load_config(raw, max_parameters=10 ** 12)
        except UserError as error:
            assert "not supported" in str(error) or "unknown" in str(error), (name, str(error))
            continue
        with torch.device("meta"):
            theirs = open_clip.model.CLIP(raw["embed_dim"], raw["vision_cfg"], raw["text_cfg"],
                                          quick_gelu=raw.get("quick_gelu", False),
                                          init_logit_bias=raw.get("init_logit_bias"))
        assert miniclip.models.config.parameter_count(config) == sum(p.numel() for p in theirs.parameters()), name
        counted += 1
    assert counted >= 10


def test_tensors_that_do_not_fit_the_config_are_refused_naming_them(tmp_path):
    tensors = miniclip.models.model_tensors(miniclip.create_model(TINY))
    tensors["visual.proj"] = np.zeros((3, 3), np.float32)
    del tensors["ln_final.bias"]
    path = str(tmp_path / "model.safetensors")
    checkpoint.save_safetensors(path, tensors, {"miniclip_config": json.dumps(TINY)})
    for load in (miniclip.load_model, lambda path: miniclip.create_model(TINY, checkpoint=path)):
        with pytest.raises(UserError, match=r"its tensors do not fit the model(.|\n)*ln_final.bias(.|\n)*visual.proj") as error:
            load(path)
        assert path in str(error.value)
