"""Reading and writing BPE merges files, the format of OpenAI's bpe_simple_vocab_16e6.txt.gz.

The format (shared with GPT-2's merges.txt): a header line containing '#version', then one merge
per line, the two symbols separated by a space, in the order they were learned ('i n', 't h',
'a n', …, 'e r</w>'). Symbols are written in the byte alphabet of bytes_unicode.py, so a space
never occurs inside one. The file may be gzip-compressed (recognised by its first two bytes,
not by its name).

OpenAI's file holds 262,144 merges; CLIP uses only the first 48,894 (see tokenizer.py).
Checked by the save/load round trips in tests/tokenizer/test_train.py and the bad-file tests.
"""
import gzip
import os

from miniclip.errors import UserError

_GZIP_MAGIC = b"\x1f\x8b"
HEADER = "#version: 0.2 (written by miniclip.tokenizer)"


def read_merges(path):
    """Return the merges in the file at `path` as a list of (first, second) pairs."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == _GZIP_MAGIC:
        data = gzip.decompress(data)
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not a BPE merges file: it is not UTF-8 text ({error})") from None
    if "#version" not in lines[0]:
        raise UserError(f"{path} is not a BPE merges file: its first line should be a "
                         f"'#version: ...' header, found {lines[0][:80]!r}")
    merges = []
    for line_number, line in enumerate(lines[1:], start=2):
        if not line:  # the file ends with a newline
            continue
        pair = tuple(line.split())
        if len(pair) != 2:
            raise UserError(f"{path}, line {line_number}: a merge is two symbols separated by a "
                             f"space, found {line[:80]!r}")
        merges.append(pair)
    return merges


def write_merges(path, merges):
    """Write `merges` to `path`, gzip-compressed when the name ends in '.gz'."""
    text = "\n".join([HEADER] + [f"{first} {second}" for first, second in merges]) + "\n"
    data = text.encode("utf-8")
    if os.fspath(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)  # mtime=0: the same merges give the same bytes
    with open(path, "wb") as f:
        f.write(data)
