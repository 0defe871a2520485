"""The pre-tokeniser against OpenCLIP's `regex` pattern: per code point, and on random strings.

Strings are restricted to characters assigned in Python's Unicode database (category != 'Cn'):
the `regex` module ships a newer Unicode version, so for characters assigned since then it knows
letters we cannot (see pretokenize.py). Surrogates are left out as no caption can hold them
after cleaning (ftfy replaces them) and they cannot be encoded to UTF-8 anyway.
"""
import sys
import unicodedata

import pytest
from hypothesis import given, settings, strategies as st

from miniclip.tokenizer.pretokenize import pretokenize

ASSIGNED = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) not in ("Cn", "Cs")]

_PIECES = ["'s", "'S", "'t", "'re", "'RE", "'ve", "'m", "'ll", "'d", "'ſ", "'", "''", "<start_of_text>",
           "<END_OF_TEXT>", "<start_of_te", "<|startoftext|>", "\x1c", "\x1f", "\u0345", "\u00a0",
           "\u3000", "\u2028", "\u200b", "2024", "½", "Ⅻ", "٣", "😀", "𝐀", "é", "e\u0301", "日本"]
_assigned_char = st.characters(exclude_categories=("Cn", "Cs"))
strings = st.lists(st.one_of(st.sampled_from(_PIECES), st.text(_assigned_char, max_size=6),
                             st.text("ab '!1 \t", max_size=6)), max_size=12).map("".join)


@pytest.mark.oracle
@pytest.mark.parametrize("plane", ["BMP", "all"])
def test_every_code_point_is_classified_as_regex_does(reference, plane):
    # Each character alone, separated by spaces: it is a letter, a digit or an 'other' token of
    # its own, or (whitespace, U+0345) no token at all. BMP-only text takes the faster pattern.
    chars = [c for c in ASSIGNED if plane == "all" or c <= "\uffff"]
    text = " ".join(chars)
    ours, theirs = pretokenize(text, use_libraries=False), reference.pat.findall(text)
    if ours != theirs:
        missing = sorted(set(theirs) ^ set(ours))[:10]
        pytest.fail(f"{len(ours)} vs {len(theirs)} tokens; first differing characters: "
                    f"{[(hex(ord(c[0])), unicodedata.category(c[0])) for c in missing]}")


@pytest.mark.oracle
@settings(max_examples=400, deadline=None)
@given(text=strings)
def test_random_strings_split_as_regex_does(reference, text):
    assert pretokenize(text, use_libraries=False) == reference.pat.findall(text)
    assert pretokenize(text) == reference.pat.findall(text)     # with `regex`, installed with open_clip


@pytest.mark.parametrize("text, words", [
    ("a dog's 2 toys!", ["a", "dog", "'s", "2", "toys", "!"]),
    ("in 2024...", ["in", "2", "0", "2", "4", "..."]),               # one digit per word
    ("they're i'll can't", ["they", "'re", "i", "'ll", "can", "'t"]),
    ("!!'s", ["!!'", "s"]),                                           # contractions only start a match
    ("x<start_of_text>y", ["x", "<start_of_text>", "y"]),
    ("<START_OF_TEXT>", ["<START_OF_TEXT>"]),                         # IGNORECASE
    ("'ſ", ["'ſ"]),                                                    # long s folds to s
    ("a\u0345b \x1c", ["a", "b", "\x1c"]),                            # see the module docstring
    ("café 日本語 😀👍", ["café", "日本語", "😀👍"]),
    ("", []),
])
@pytest.mark.parametrize("use_libraries", [False, True])
def test_examples(text, words, use_libraries):
    assert pretokenize(text, use_libraries) == words
