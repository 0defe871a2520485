"""The byte alphabet of byte-level BPE: one printable character for each of the 256 byte values.

Why: BPE merges strings of symbols, and CLIP's merges file is a text file of such strings. Working
on UTF-8 *bytes* means no caption is ever out of vocabulary (every byte has a token), but raw
bytes include spaces and control characters that would break a whitespace-separated text file.
GPT-2 (and then CLIP) solved this by giving every byte a visible stand-in character:

- bytes that already print as themselves ('!'..'~', '¡'..'¬', '®'..'ÿ', 188 of them) keep their
  own code point, so 'cat' is still spelled 'cat';
- the other 68 (space, control bytes, 0x7F-0xA0, 0xAD) are mapped, in order, to U+0100, U+0101, …
  For example the space byte 0x20 becomes 'Ġ' (U+0120).

The table is the same as `bytes_to_unicode()` in openai/CLIP `simple_tokenizer.py` (checked in
tests/tokenizer/test_bytes_unicode.py against open_clip's copy).
"""


def bytes_to_unicode():
    """Return {byte value: stand-in character} for all 256 bytes, in CLIP's order."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table = {b: chr(b) for b in printable}
    next_free = 256
    for b in range(256):
        if b not in table:
            table[b] = chr(next_free)
            next_free += 1
    # The insertion order is the vocabulary order: ids 0..187 are the printable bytes ('!' is
    # id 0, which is why CLIP's zero padding decodes as '!'), ids 188..255 the remapped ones.
    return table


BYTE_ENCODER = bytes_to_unicode()
BYTE_DECODER = {char: b for b, char in BYTE_ENCODER.items()}


def bytes_to_symbols(text):
    """'héllo' → 'hÃ©llo': the UTF-8 bytes of `text`, each written as its stand-in character."""
    return "".join(BYTE_ENCODER[b] for b in text.encode("utf-8"))


def symbols_to_bytes(symbols):
    """The inverse of bytes_to_symbols, stopping at bytes (the caller decides how to decode)."""
    return bytes(BYTE_DECODER[char] for char in symbols)
