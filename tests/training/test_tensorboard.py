"""--report-to tensorboard: the event files read back with a decoder written here from the formats'
specifications (TFRecord framing with masked CRC-32C, the Event protocol buffer), not with the
writer's code: the scalars are metrics.jsonl's, and a resumed run tells TensorBoard to forget the
steps it logs again."""
import glob
import os
import struct

import numpy as np
import pytest

from miniclip import train
from miniclip.training import tensorboard
from miniclip.training.plots import read_metrics
from tests.training.conftest import user_error


def test_crc32c_matches_the_published_check_values():
    # RFC 3720 B.4 (iSCSI) and the CRC catalogue's check value of "123456789".
    assert tensorboard.crc32c(b"123456789") == 0xE3069283
    assert tensorboard.crc32c(bytes(32)) == 0x8A9136AA
    assert tensorboard.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert tensorboard.crc32c(bytes(range(32))) == 0x46DD794E


# ---- an independent reader ---------------------------------------------------------------------

def records(path):
    """The TFRecords of a file, each CRC checked."""
    data, offset, found = open(path, "rb").read(), 0, []
    while offset < len(data):
        header = data[offset:offset + 8]
        (length,), (length_crc,) = struct.unpack("<Q", header), struct.unpack("<I", data[offset + 8:offset + 12])
        payload = data[offset + 12:offset + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])
        assert length_crc == masked(header) and payload_crc == masked(payload)
        found.append(payload)
        offset += 16 + length
    assert offset == len(data)
    return found


def masked(data):
    """The masked CRC-32C, bit by bit (the writer uses a table)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 * (crc & 1))
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2 ** 32


def fields(message):
    """{field number: [values]} of a protocol buffer: ints, bytes, and raw 4/8-byte values."""
    out, i = {}, 0

    def varint():
        nonlocal i
        value, shift = 0, 0
        while True:
            byte = message[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while i < len(message):
        key = varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value = varint()
        elif wire_type == 1:
            value, i = message[i:i + 8], i + 8
        elif wire_type == 5:
            value, i = message[i:i + 4], i + 4
        elif wire_type == 2:
            length = varint()
            value, i = message[i:i + length], i + length
        else:
            raise AssertionError(f"wire type {wire_type}")
        out.setdefault(number, []).append(value)
    return out


def events(path):
    """[(step, kind, value)]: ("version", text), ("start", None) or ("scalar", (tag, float32))."""
    found = []
    for record in records(path):
        event = fields(record)
        assert struct.unpack("<d", event[1][0])[0] > 1.7e9   # a wall time (seconds since 1970)
        step = event.get(2, [0])[0]
        if 3 in event:
            found.append((step, "version", event[3][0].decode()))
        if 7 in event:
            assert fields(event[7][0]) == {1: [1]}   # session_log: SessionLog status START
            found.append((step, "start", None))
        for summary in event.get(5, []):
            for value in fields(summary)[1]:
                value = fields(value)
                found.append((step, "scalar", (value[1][0].decode(), struct.unpack("<f", value[2][0])[0])))
    return found


# ---- the trainer ------------------------------------------------------------------------------

def run(flags, name):
    assert train.main(flags + ["--name", name]) == 0
    return os.path.join(flags[flags.index("--logs") + 1], name)


def test_the_event_file_holds_metrics_jsonl_as_tensorboard_names_it(run_flags):
    folder = run(run_flags + ["--epochs", "2", "--report-to", "tensorboard"], "tb")
    files = glob.glob(os.path.join(folder, "tensorboard", "events.out.tfevents.*"))
    assert len(files) == 1
    found = events(files[0])
    assert found[0] == (0, "version", "brain.Event:2")
    scalars = {(step, tag): value for step, kind, (tag, value) in
               ((s, k, v) for s, k, v in found if k == "scalar")}
    metrics = read_metrics(os.path.join(folder, "metrics.jsonl"))
    steps = [r for r in metrics if "loss" in r]
    assert len(steps) == 8
    for r in steps:
        for key, tag in (("loss", "train/loss"), ("lr", "train/lr"), ("logit_scale", "train/scale"),
                         ("samples_per_s", "train/samples_per_second")):
            assert scalars[r["step"], tag] == np.float32(r[key]), (r["step"], tag)
    evals = [r for r in metrics if "eval" in r]
    assert [r["step"] for r in evals] == [0, 4, 8]
    for r in evals:
        for key, value in r["eval"].items():
            assert scalars[r["step"], f"val/{key}"] == np.float32(value), key
    assert len(scalars) == sum(1 for _, kind, _ in found if kind == "scalar")   # nothing else, nothing twice


def test_a_resumed_run_starts_its_file_with_a_session_start_at_the_next_step(run_flags):
    flags = run_flags + ["--epochs", "2", "--report-to", "tensorboard"]
    folder = run(flags, "resumed")
    os.remove(os.path.join(folder, "checkpoints", "epoch_2.safetensors"))   # as if killed before saving it
    run(flags + ["--resume", "latest"], "resumed")
    first, second = sorted(glob.glob(os.path.join(folder, "tensorboard", "events.out.tfevents.*")))
    found = events(second)
    assert found[:2] == [(5, "version", "brain.Event:2"), (5, "start", None)]   # steps 5-8 are logged again
    assert sorted({step for step, kind, _ in found if kind == "scalar"}) == [5, 6, 7, 8]
    assert max(step for step, kind, _ in events(first) if kind == "scalar") == 8


def test_report_to_names_what_miniclip_writes(run_flags, capsys):
    message = user_error(capsys, run_flags + ["--report-to", "wandb,tensorboard"])
    assert message == ("--report-to wandb,tensorboard: miniclip writes tensorboard (and always "
                       "metrics.jsonl), not wandb\n")


@pytest.mark.parametrize("every, max_steps, logged", [
    (1, 12, list(range(1, 13))),
    (3, 12, [1, 4, 5, 8, 9, 12]),   # OpenCLIP: batch index % 3 == 0 and each epoch's last batch
    (2, 6, [1, 3, 4, 5, 6]),        # and the run's last step, mid-epoch
])
def test_log_every_n_steps_logs_as_openclip_does(run_flags, every, max_steps, logged):
    folder = run(run_flags + ["--max-steps", str(max_steps), "--log-every-n-steps", str(every)], f"every_{every}")
    assert [r["step"] for r in read_metrics(os.path.join(folder, "metrics.jsonl")) if "loss" in r] == logged
