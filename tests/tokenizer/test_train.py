"""BPE training: hand-worked examples, determinism, vocabulary size, file round trips, bad files."""
import gzip
import random
import re

import pytest
from hypothesis import given, settings, strategies as st

from miniclip.tokenizer import Tokenizer, clean, learn_merges, pretokenize, train_bpe
from miniclip.tokenizer.benchmark import make_captions

CORPUS = make_captions(400, seed=1)


@pytest.fixture(scope="module")
def small():
    return train_bpe(CORPUS, vocab_size=700)


def test_hand_worked_example():
    # 'aaab' is a a a b</w>: pairs (a,a) twice, (a,b</w>) once, so (a,a) is merged first, left
    # to right: aa a b</w>. Then (aa,a) and (a,b</w>) both occur once; the tie goes to the
    # smaller pair in string order, ('a', 'b</w>'). Then the last pair, and nothing is left.
    assert learn_merges(["aaab"], 3) == [("a", "a"), ("a", "b</w>"), ("aa", "ab</w>")]
    tokenizer = train_bpe(["aaab"], vocab_size=517)
    assert tokenizer.encode("aaab") == [514]            # 512 byte tokens, then the 3 merges
    assert tokenizer.encode("aab") == [512, tokenizer.encoder["b</w>"]]   # aa, b</w>
    assert train_bpe(["aaab"], vocab_size=600, exact=False).vocab_size == 517   # all 3 merges, no more
    with pytest.raises(ValueError, match="at most 517"):
        train_bpe(["aaab"], vocab_size=518)


def test_most_frequent_pair_first_ties_in_string_order():
    # the ×3: (t,h) 3, (h,e</w>) 3; cat hat mat: (a,t</w>) 3; the rest once.
    merges = learn_merges(["the cat", "the hat", "the mat", "a tea"], 3)
    assert merges == [("a", "t</w>"), ("h", "e</w>"), ("t", "he</w>")]


def test_deterministic_and_independent_of_text_order():
    shuffled = CORPUS[:]
    random.Random(0).shuffle(shuffled)
    assert learn_merges(CORPUS, 150) == learn_merges(CORPUS, 150) == learn_merges(shuffled, 150)


def test_vocab_size_is_what_was_asked(small):
    assert small.vocab_size == 700 and len(small.merges) == 700 - 514
    assert (small.sot_token_id, small.eot_token_id) == (698, 699)
    ids = small(CORPUS)
    assert ids.max() == small.eot_token_id and ids.min() == 0


def test_training_text_takes_fewer_tokens_than_bytes(small):
    n_tokens = sum(len(small.encode(text)) for text in CORPUS)
    n_bytes = sum(len(clean(text).replace(" ", "").encode()) for text in CORPUS)
    assert n_tokens < n_bytes / 2, (n_tokens, n_bytes)   # 186 merges: ~2.6 bytes per token


def test_fully_trained_vocabulary_encodes_each_training_word_as_one_token():
    # Encoding replays training: with every possible merge learned, each word is one token.
    texts = ["low lower lowest newer wider", "new newest wide low"]
    with pytest.raises(ValueError, match=r"vocab_size can be at most (\d+)") as error:
        learn_merges(texts, 10_000)
    tokenizer = train_bpe(texts, int(re.search(r"at most (\d+)", str(error.value)).group(1)))
    for word in ["low", "lower", "lowest", "newer", "wider", "new", "newest", "wide"]:
        assert len(tokenizer.encode(word)) == 1, word
    assert len(tokenizer.encode("lowering")) > 1


@pytest.mark.parametrize("name", ["merges.txt", "merges.txt.gz"])
def test_save_and_load_round_trip(small, tmp_path, name):
    path = tmp_path / name
    small.save(path)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    loaded = Tokenizer.from_file(path)
    assert loaded.merges == small.merges and loaded.vocab_size == 700
    assert (loaded(CORPUS) == small(CORPUS)).all()


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=40))
def test_decode_round_trip_with_a_small_vocabulary(small, text):
    assert small.decode(small.encode(text)) == "".join(w + " " for w in pretokenize(clean(text)))


@pytest.mark.parametrize("vocab_size", [513, 0, 600.0, "600"])
def test_vocab_size_must_count_the_base_tokens(vocab_size):
    with pytest.raises(ValueError, match="at least|>= 514"):
        train_bpe(CORPUS, vocab_size)


def test_zero_merges_is_a_byte_level_tokenizer():
    tokenizer = train_bpe(CORPUS, 514)
    assert tokenizer.vocab_size == 514 and tokenizer.encode("ab") == [tokenizer.encoder["a"],
                                                                      tokenizer.encoder["b</w>"]]


def write(tmp_path, text, name="merges.txt"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("content, message", [
    ("hello world\nthis is not a merges file\n", "first line should be a '#version"),
    (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "not UTF-8 text"),
    (gzip.compress(b"\xff\xfe garbage", mtime=0), "not UTF-8 text"),   # mtime=0: the same bytes (and test id) on every xdist worker
    ("#version: 0.2\na b c\n", "line 2: a merge is two symbols"),
    ("#version: 0.2\na b\nab c\nx yz\n", "merge 2 \\('x', 'yz'\\) uses 'yz'"),
    ("#version: 0.2\na b\nb c\nab c\na bc\n", "makes 'abc', which an earlier merge already made"),
])
def test_bad_merges_files_are_clear_errors(tmp_path, content, message):
    with pytest.raises(ValueError, match=message):
        Tokenizer(write(tmp_path, content))


def test_vocab_size_larger_than_the_file_allows(tmp_path):
    path = write(tmp_path, "#version: 0.2\na b\n")
    assert Tokenizer(path).vocab_size == 515
    with pytest.raises(ValueError, match="vocab_size=600 needs 86 merges.*has 1"):
        Tokenizer(path, vocab_size=600)
