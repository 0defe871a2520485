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
