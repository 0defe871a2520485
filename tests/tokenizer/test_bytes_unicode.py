"""The byte alphabet: CLIP's exact table and order, printable stand-ins, lossless round trip."""
import pytest

from miniclip.tokenizer.bytes_unicode import BYTE_ENCODER, bytes_to_symbols, symbols_to_bytes


@pytest.mark.oracle
def test_table_and_order_equal_open_clip(open_clip):
    # The order is the vocabulary order (ids 0..255), so compare the items, not just the dicts.
    assert list(BYTE_ENCODER.items()) == list(open_clip.tokenizer.bytes_to_unicode().items())


def test_every_byte_gets_its_own_visible_character():
    chars = list(BYTE_ENCODER.values())
    assert sorted(BYTE_ENCODER) == list(range(256))
    assert len(set(chars)) == 256
    invisible = [c for c in chars if c.isspace() or not c.isprintable()]
    assert not invisible, f"stand-ins that are whitespace or unprintable: {invisible!r}"
    assert BYTE_ENCODER[ord("a")] == "a" and BYTE_ENCODER[ord(" ")] == "Ġ"
    assert chars[0] == "!"  # id 0, the padding id, is the token '!'


def test_round_trip_of_all_bytes_and_a_multibyte_word():
    every_byte = bytes(range(256))
    symbols = "".join(BYTE_ENCODER[b] for b in every_byte)
    assert symbols_to_bytes(symbols) == every_byte
    assert bytes_to_symbols("é") == "Ã©"  # U+00E9 is the two UTF-8 bytes C3 A9
    assert symbols_to_bytes(bytes_to_symbols("naïve 😀")).decode("utf-8") == "naïve 😀"
