"""Reading and writing weights as safetensors files, without torch.

A .safetensors file (the format of OpenCLIP's `open_clip_model.safetensors`) is
    8 bytes     little-endian uint64 N, the length of the header
    N bytes     a JSON header: {name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]},
                                "__metadata__": {str: str}}
    the rest    the raw little-endian bytes of every tensor, at the offsets the header gives
so NumPy can read it with frombuffer. bfloat16 (BF16) is widened to float32 (bf16 is the top
half of a float32). Writes are atomic: a temporary file in the same folder, then os.replace, so
a crash mid-write never leaves a half-written checkpoint where a good one was.
"""
import json
import os
import struct
import tempfile

import numpy as np

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
DTYPE_NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


def load_safetensors(path):
    """Return (tensors: dict name -> np.ndarray, metadata: dict str -> str)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: too short to be a safetensors file ({len(raw)} bytes)")
    (header_length,) = struct.unpack("<Q", raw[:8])
    if header_length > len(raw) - 8:
        raise ValueError(f"{path}: not a safetensors file (header length {header_length} exceeds "
                         f"the file size {len(raw)}); miniclip reads .safetensors checkpoints only")
    try:
        header = json.loads(raw[8:8 + header_length])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a safetensors file (unreadable header: {error})") from None
    metadata = header.pop("__metadata__", {}) or {}
    data = memoryview(raw)[8 + header_length:]
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        buffer = data[begin:end]
        if info["dtype"] == "BF16":
            halves = np.frombuffer(buffer, dtype="<u2").astype(np.uint32) << 16
            array = halves.view(np.float32)
        elif info["dtype"] in DTYPES:
            array = np.frombuffer(buffer, dtype=np.dtype(DTYPES[info["dtype"]]).newbyteorder("<"))
        else:
            raise ValueError(f"{path}: tensor {name!r} has dtype {info['dtype']}, which miniclip cannot read")
        tensors[name] = array.reshape(tuple(info["shape"])).copy()
    return tensors, metadata


def read_safetensors_metadata(path):
    """The string metadata of a safetensors file, reading only its header."""
    with open(path, "rb") as f:
        (header_length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_length))
    return header.get("__metadata__", {}) or {}


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
    """Write byte chunks to a temporary file beside `path`, fsync it, then rename it over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
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
