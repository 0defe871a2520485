"""--report-to tensorboard: scalar metrics in TensorBoard's event-file format, with no dependency.

TensorBoard reads a folder of files named events.out.tfevents.*: a sequence of TFRecords, each an
`Event` protocol buffer. Writing the few fields that scalars need takes the two formats below, so
miniclip writes them itself instead of pulling in TensorFlow, tensorboard or tensorboardX:

TFRecord framing (tensorflow/core/lib/io/record_writer.cc), integers little-endian:
    uint64 length | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)
    masked_crc32c(b) = rotate_right(crc32c(b), 15) + 0xa282ead8  (mod 2^32)
crc32c is the CRC with the Castagnoli polynomial (reflected 0x82f63b78), computed from a table.

Protocol-buffer encoding (tensorflow/core/util/event.proto, framework/summary.proto): a field is
a key (field_number << 3 | wire_type) then its value: wire type 0 a varint (7 bits a byte, low
first, the high bit says "more"), 1 a 64-bit double, 2 a length (varint) and that many bytes, 5 a
32-bit float. The messages used:
    Event      { double wall_time = 1; int64 step = 2;
                 oneof { string file_version = 3; Summary summary = 5; SessionLog session_log = 7; } }
    Summary    { repeated Value value = 1; }   Value { string tag = 1; float simple_value = 2; }
    SessionLog { SessionStatus status = 1; }   (START = 1)
A file starts with an Event whose file_version is "brain.Event:2". A resumed run starts its file
with a SessionLog START at the step it continues from: TensorBoard then drops the points at and
after that step from the earlier files (the steps the stopped run logged past its checkpoint,
which the resumed run logs again), as metrics.jsonl forgets them (tensorboardX's purge_step).
Checked in tests/training/test_tensorboard.py by reading the files back with a separate decoder
(and, once, with TensorBoard's own EventAccumulator: the same scalars, and the resumed steps once).
"""
import os
import socket
import struct
import time


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data):
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def _varint(n):
    out = bytearray()
    n &= 0xFFFFFFFFFFFFFFFF   # int64: a negative number is its two's complement, 10 bytes
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number, wire_type, payload):
    """One field: its key, then the payload (already encoded; a length is put before wire type 2)."""
    if wire_type == 2:
        payload = _varint(len(payload)) + payload
    return _varint(number << 3 | wire_type) + payload


def event(step, wall_time, file_version=None, scalars=None, session_start=False):
    """An Event message: the header (file_version), a SessionLog START, or {tag: value} scalars
    (one of them: they are a oneof)."""
    message = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(step))
    if file_version is not None:
        message += _field(3, 2, file_version.encode())
    if scalars:
        values = b"".join(_field(1, 2, _field(1, 2, tag.encode()) + _field(2, 5, struct.pack("<f", value)))
                          for tag, value in scalars.items())
        message += _field(5, 2, values)
    if session_start:
        message += _field(7, 2, _field(1, 0, _varint(1)))
    return message


class SummaryWriter:
    """Scalars into a new event file in `folder` (tensorboardX's and torch's class name; one file
    per run and resume). purge_step: the step a resumed run continues from."""

    def __init__(self, folder, purge_step=None):
        os.makedirs(folder, exist_ok=True)
        # The time in nanoseconds (19 digits) keeps the files of one folder in the order written.
        name = f"events.out.tfevents.{time.time_ns()}.{socket.gethostname()}.{os.getpid()}"
        self.path = os.path.join(folder, name)
        self.file = open(self.path, "xb")
        self._write(event(0 if purge_step is None else purge_step, time.time(), file_version="brain.Event:2"))
        if purge_step is not None:
            self._write(event(purge_step, time.time(), session_start=True))

    def add_scalars(self, scalars, step):
        """Several {tag: value} points of one step, in one Event."""
        self._write(event(step, time.time(), scalars={tag: float(v) for tag, v in scalars.items()}))

    def _write(self, message):
        self.file.write(tfrecord(message))
        self.file.flush()   # TensorBoard shows a live run's points as they come

    def close(self):
        self.file.close()
