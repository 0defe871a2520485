"""Token ids against OpenCLIP's tokenizer for ViT-B/32 (whole (N, context) arrays), decode, errors."""
import ast
import json
import pathlib

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from miniclip.tokenizer import Tokenizer, clean, pretokenize
from miniclip.tokenizer.benchmark import make_captions
from miniclip.tokenizer.bytes_unicode import BYTE_ENCODER
from tests.tokenizer.corpus import CAPTIONS

_PIECES = ["it's", "'ll", "&amp;", "&#39;", "&quot;", "<b>", "\n", "\r\n", "  ", "\u201c", "\u2019",
           "\uff21\uff42", "\ufb01", "e\u0301", "日本", "😀", "👍🏽", "123", "½", "ß", "İ", "\u0345", "\x1c"]
# Characters assigned in Python's Unicode database: `regex` (open_clip) knows a newer Unicode, whose
# new letters are 'other' characters for us (pretokenize.py). Surrogates are in: ftfy replaces them.
_assigned_char = st.characters(exclude_categories=("Cn",))
captions = st.lists(st.one_of(st.sampled_from(_PIECES), st.text(_assigned_char, max_size=8),
                              st.text("abcdefghij ,.!'", max_size=10)), max_size=15).map("".join)


def assert_same_rows(ours, theirs, texts):
    """Compare whole arrays; on a mismatch, name the caption and the first differing position."""
    assert ours.dtype == np.int64 and ours.shape == theirs.shape
    for row, text in enumerate(texts):
        where = np.flatnonzero(ours[row] != theirs[row])
        assert where.size == 0, (f"caption {row} {text!r}: first difference at position {where[0]}, "
                                 f"ours {ours[row, where[0]:where[0] + 5]} vs open_clip "
                                 f"{theirs[row, where[0]:where[0] + 5]}")


@pytest.mark.oracle
def test_corpus_ids_equal_open_clip(tokenizer, reference):
    assert_same_rows(tokenizer(CAPTIONS), reference(CAPTIONS).numpy(), CAPTIONS)


@pytest.mark.oracle
def test_corpus_ids_equal_open_clip_with_and_without_ftfy_and_regex(openai_bpe_path, reference, ftfy, regex):
    # The default uses ftfy and regex when installed (they are, with open_clip); the readable
    # re-implementations give the same ids on the corpus.
    for use_libraries in (True, False):
        ours = Tokenizer(openai_bpe_path, use_libraries=use_libraries)(CAPTIONS)
        assert_same_rows(ours, reference(CAPTIONS).numpy(), CAPTIONS)


@pytest.mark.oracle
def test_benchmark_captions_equal_open_clip(tokenizer, reference):
    texts = make_captions(300)
    assert_same_rows(tokenizer(texts), reference(texts).numpy(), texts)


@pytest.mark.oracle
@pytest.mark.parametrize("context_length", [2, 5, 16, 77, 100])
def test_context_lengths_and_truncation_equal_open_clip(openai_bpe_path, reference, context_length):
    ours = Tokenizer(openai_bpe_path, context_length=context_length)(CAPTIONS)
    assert_same_rows(ours, reference(CAPTIONS, context_length=context_length).numpy(), CAPTIONS)


@pytest.mark.oracle
@settings(max_examples=300, deadline=None)
@given(text=captions)
def test_random_text_ids_equal_open_clip(tokenizer, reference, ftfy, text):
    # Restricted to text on which ftfy's mojibake repair (not reproduced, see clean.py) is idle.
    assume(ftfy.fix_text(text) == ftfy.fix_text(text, fix_encoding=False))
    assert tokenizer.encode(text) == reference.encode(text)
    assert_same_rows(tokenizer([text]), reference([text]).numpy(), [text])


@pytest.mark.oracle
def test_vocabulary_and_special_ids_equal_open_clip(tokenizer, reference):
    assert tokenizer.vocab_size == reference.vocab_size == 49408
    assert (tokenizer.sot_token_id, tokenizer.eot_token_id) == (49406, 49407)
    assert (reference.sot_token_id, reference.eot_token_id) == (49406, 49407)
    assert tokenizer.encoder == reference.encoder


@pytest.mark.oracle
def test_known_ids(tokenizer):
    assert tokenizer("a photo of a cat")[0, :8].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407, 0]


@pytest.mark.oracle
def test_truncation_keeps_eot_last_or_raises(tokenizer):
    long_caption = "a very long caption " * 30
    row = tokenizer(long_caption)[0]
    assert row[0] == tokenizer.sot_token_id and row[-1] == tokenizer.eot_token_id
    assert 0 not in row
    with pytest.raises(ValueError, match=r"caption 1 \('a very long caption.*'\) is 122 tokens long"):
        tokenizer(["short", long_caption], truncate=False)
    exactly_full = "cat " * 75                                  # 75 words + SOT + EOT = 77
    assert tokenizer(exactly_full, truncate=False)[0, -1] == tokenizer.eot_token_id


@pytest.mark.oracle
def test_decode_equals_open_clip_on_plain_ids(tokenizer, reference):
    # Except text with the literal special tokens: they are SOT/EOT, which our decode drops.
    for text in [t for t in CAPTIONS if "_of_text>" not in t.lower()]:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == reference.decode(ids), text


@pytest.mark.oracle
def test_decode_reads_a_row_up_to_eot(tokenizer):
    rows = tokenizer(["a photo of a cat", "two dogs"])
    assert tokenizer.decode(rows[0]) == "a photo of a cat "
    assert tokenizer.decode(rows) == ["a photo of a cat ", "two dogs "]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tokenizer.decode([320, 49408])


@pytest.mark.oracle
@settings(max_examples=200, deadline=None)
@given(text=captions)
def test_decode_round_trip(tokenizer, text):
    # Decoding gives the cleaned text with a space after every pre-tokenised word.
    assert tokenizer.decode(tokenizer.encode(text)) == "".join(w + " " for w in pretokenize(clean(text)))


@pytest.mark.oracle
def test_truncated_multibyte_character_decodes_to_replacement_char(tokenizer, reference):
    # The first three of the four UTF-8 bytes of '😀', one byte token each.
    ids = [tokenizer.encoder[BYTE_ENCODER[b]] for b in "😀".encode()[:3]]
    assert tokenizer.decode(ids) == reference.decode(ids) == "\ufffd"


def test_the_default_is_openais_vocabulary_shipped_with_miniclip():
    tokenizer = Tokenizer()
    assert tokenizer.vocab_size == 49408 and (tokenizer.sot_token_id, tokenizer.eot_token_id) == (49406, 49407)
    assert list(tokenizer(["a photo of a cat"])[0, :8]) == [49406, 320, 1125, 539, 320, 2368, 49407, 0]
    with pytest.raises(ValueError, match="not both"):
        Tokenizer("merges.txt", merges=[])


@pytest.mark.oracle
def test_the_shipped_vocabulary_is_open_clips(openai_bpe_path):
    from miniclip.tokenizer.tokenizer import OPENAI_MERGES
    assert OPENAI_MERGES.read_bytes() == open(openai_bpe_path, "rb").read()


def test_context_length_must_hold_sot_and_eot(tmp_path):
    with pytest.raises(ValueError, match="context_length"):
        Tokenizer(merges=[], context_length=1)


def test_tokenizer_imports_only_runtime_dependencies():
    # torch and open_clip are test oracles, never miniclip dependencies (regex and ftfy are
    # optional: see the next test).
    forbidden = {"torch", "open_clip"}
    package = pathlib.Path(__file__).parents[2] / "miniclip" / "tokenizer"
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"


def test_without_ftfy_and_regex_the_tokenizer_falls_back_to_its_own_code():
    import subprocess
    import sys
    code = ("import sys, json\nsys.modules['ftfy'] = sys.modules['regex'] = None   # as if not installed\n"
            "from miniclip.tokenizer import Tokenizer\nfrom tests.tokenizer.corpus import CAPTIONS\n"
            "print(json.dumps(Tokenizer()(CAPTIONS).tolist()))")
    root = pathlib.Path(__file__).parents[2]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stderr
    assert np.array_equal(np.array(json.loads(result.stdout)), Tokenizer(use_libraries=False)(CAPTIONS))
