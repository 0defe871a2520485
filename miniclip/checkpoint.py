"""Reading and writing weights as safetensors files, without torch.

A .safetensors file (the format of OpenCLIP's `open_clip_model.safetensors`) is
    8 bytes     little-endian uint64 N, the length of the header
    N bytes     a JSON header: {name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]},
                                "__metadata__": {str: str}}
    the rest    the data region: the raw little-endian bytes of every tensor, at the offsets
                (counted from the start of the data region) that the header gives
so NumPy can read each tensor straight into an array. bfloat16 (BF16) is widened to float32
(bf16 is the top half of a float32).

A checkpoint may come from anywhere, so the header is checked before a byte of tensor data is
read, as the safetensors library does (`Metadata::validate` in huggingface/safetensors):
  - the header length fits in the file and is at most MAX_HEADER_BYTES (a length of 2^60 would
    otherwise be an allocation of an exabyte);
  - the header is UTF-8 JSON, an object with no name given twice;
  - every tensor has a known dtype, a shape of non-negative integers and data_offsets
    [begin, end] with end - begin = prod(shape) * itemsize;
  - sorted by offset, the tensors tile the data region exactly: each starts where the one before
    it ends and the last ends at the end of the file. So no byte is read as two tensors (one
    region aliased by 100 names would be 100 copies of it), nothing is read past the end, and
    every tensor is read once: the arrays returned take no more memory than the file (twice
    for BF16, widened to float32);
  - __metadata__, when present, maps strings to strings.
A file that fails a check is refused with a UserError naming the file and the tensor or field.
Each tensor is read from the file into its own array (no copy of the whole file in memory).

Writes are atomic: a temporary file in the same folder, fsync, then os.replace, so a crash
mid-write never leaves a half-written checkpoint where a good one was.
"""
import json
import math
import os
import secrets
import struct
from typing import NamedTuple

import numpy as np

from miniclip.errors import UserError

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16,
          "U8": np.uint8, "BOOL": np.bool_}
DTYPE_NAMES = {np.dtype(v): k for k, v in DTYPES.items()}
# How each dtype is stored in the file; BF16 is read as its 16 bits, then widened.
STORED = {**{name: np.dtype(dtype).newbyteorder("<") for name, dtype in DTYPES.items()},
          "BF16": np.dtype("<u2")}
MAX_HEADER_BYTES = 100_000_000          # the safetensors library's limit
MAX_DIMENSIONS = 32                     # NumPy 1.x's limit (2.x allows 64)


class TensorEntry(NamedTuple):
    """One checked header entry: dtype name, shape, and its bytes [begin, end) in the data region."""
    dtype: str
    shape: tuple
    begin: int
    end: int


def load_safetensors(path):
    """Return (tensors: dict name -> np.ndarray, metadata: dict str -> str), after the checks of
    the module docstring."""
    with open(path, "rb") as f:
        entries, metadata, data_start = read_header(f, path)
        tensors = {name: read_tensor(f, data_start + entry.begin, entry, f"{path}: tensor {name!r}")
                   for name, entry in entries.items()}
    return tensors, metadata


def read_safetensors_metadata(path):
    """The string metadata of a safetensors file, reading (and checking) only its header."""
    with open(path, "rb") as f:
        return read_header(f, path)[1]


def read_header(f, path):
    """(entries: dict name -> TensorEntry, metadata, where the data region starts) of the open
    file `f`, or a UserError saying what is wrong with it."""
    size = os.fstat(f.fileno()).st_size
    if size < 8:
        raise UserError(f"{path}: too short to be a safetensors file ({size} bytes)")
    (header_length,) = struct.unpack("<Q", f.read(8))
    if header_length > min(size - 8, MAX_HEADER_BYTES):
        raise UserError(f"{path}: not a safetensors file (its header length {header_length} is more than "
                        f"{'the file holds' if header_length > size - 8 else 'the limit'}, "
                        f"{min(size - 8, MAX_HEADER_BYTES)} bytes); miniclip reads .safetensors checkpoints only")
    try:
        header = json.loads(f.read(header_length).decode("utf-8"), object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as error:      # not UTF-8, not JSON, a name given twice
        raise UserError(f"{path}: not a safetensors file (its header is not valid JSON: {error})") from None
    if not isinstance(header, dict):
        raise UserError(f"{path}: not a safetensors file (its header is a JSON {type(header).__name__}, "
                        f"not an object of tensors)")
    metadata = check_metadata(header.pop("__metadata__", None), path)
    entries = {name: check_entry(info, f"{path}: tensor {name!r}") for name, info in header.items()}
    check_layout(entries, size - 8 - header_length, path)
    return entries, metadata, 8 + header_length


def _unique_keys(pairs):
    """json's object hook: a dict, refusing a name given twice (json.loads would keep the last)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        key = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"the name {key!r} appears twice")
    return obj


def check_metadata(metadata, path):
    """__metadata__: absent, null or an object of string values."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise UserError(f"{path}: __metadata__ must map strings to strings, got a JSON {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise UserError(f"{path}: __metadata__[{key!r}] must be a string, got {_short(value)}")
    return metadata


def check_entry(info, where):
    """One tensor's header entry as a TensorEntry, its dtype, shape and byte count consistent."""
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise UserError(f"{where}: expected an object with dtype, shape and data_offsets, got {_short(info)}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in STORED:
        raise UserError(f"{where}: dtype {_short(dtype)} is not one miniclip reads ({', '.join(STORED)})")
    if not (isinstance(shape, list) and len(shape) <= MAX_DIMENSIONS and all(map(_is_count, shape))):
        raise UserError(f"{where}: shape {_short(shape)} is not a list of at most {MAX_DIMENSIONS} "
                        f"non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))):
        raise UserError(f"{where}: data_offsets {_short(offsets)} is not [begin, end], two non-negative integers")
    begin, end = offsets
    if end < begin:
        raise UserError(f"{where}: data_offsets [{begin}, {end}] end before they begin")
    nbytes = math.prod(shape) * STORED[dtype].itemsize
    if end - begin != nbytes:
        raise UserError(f"{where}: data_offsets [{begin}, {end}] hold {end - begin} bytes, but shape "
                        f"{shape} of {dtype} is {nbytes} bytes")
    return TensorEntry(dtype, tuple(shape), begin, end)


def check_layout(entries, data_size, path):
    """Sorted by offset, the tensors must tile the data region [0, data_size) exactly."""
    position = 0
    for name, entry in sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end)):
        where = f"{path}: tensor {name!r} at data_offsets [{entry.begin}, {entry.end}]"
        if entry.begin < position:
            raise UserError(f"{where} overlaps the tensor before it, which ends at byte {position}")
        if entry.begin > position:
            raise UserError(f"{where} leaves a gap: the tensor before it ends at byte {position}")
        if entry.end > data_size:
            raise UserError(f"{where} ends past the end of the file (its data region has "
                            f"{data_size} bytes): the file is truncated")
        position = entry.end
    if position != data_size:
        raise UserError(f"{path}: the tensors end at byte {position} of the data region, but the file "
                        f"holds {data_size} bytes after the header: {data_size - position} bytes "
                        f"belong to no tensor")


def read_tensor(f, start, entry, where):
    """Read one checked tensor from file offset `start` into a new array (BF16 widened to float32)."""
    f.seek(start)
    array = np.empty(entry.shape, STORED[entry.dtype])
    if f.readinto(array.reshape(-1).view(np.uint8)) != entry.end - entry.begin:
        raise UserError(f"{where}: the file ended before the tensor's data (was it changed while read?)")
    if entry.dtype == "BF16":
        widened = array.astype(np.uint32)
        widened <<= 16
        return widened.view(np.float32)
    if entry.dtype == "BOOL" and array.view(np.uint8).max(initial=0) > 1:
        raise UserError(f"{where}: a BOOL tensor holds bytes other than 0 and 1")
    return array


def _is_count(value):
    return type(value) is int and value >= 0             # not bool, not float


def _short(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def save_safetensors(path, tensors, metadata=None):
    """Write a dict of arrays (and string metadata) to `path` atomically."""
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        array = np.asarray(array, order="C")          # (ascontiguousarray would make 0-d arrays 1-d)
        if array.dtype not in DTYPE_NAMES:
            raise TypeError(f"cannot save {name!r}: dtype {array.dtype} has no safetensors name")
        blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": DTYPE_NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    header_bytes = json.dumps(header).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)      # the data starts 8-byte aligned
    atomic_write(path, [struct.pack("<Q", len(header_bytes)), header_bytes, *blobs])


def atomic_write(path, chunks):
    """Write byte chunks to a temporary file beside `path`, fsync it, then rename it over `path`.

    The temporary file is created with mode 0o666 like any new file, so the umask decides the
    checkpoint's permissions (tempfile.mkstemp would make every checkpoint 0o600); O_EXCL makes
    sure it is a new file, never one that was already there."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".tmp-{secrets.token_hex(8)}{os.path.basename(path)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
