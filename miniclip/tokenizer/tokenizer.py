"""CLIP's tokenizer: captions → (N, 77) int64 arrays of token ids, and ids → text.

    tokenizer = Tokenizer()                                  # OpenAI's vocabulary, shipped with miniclip
    tokenizer(["a photo of a cat", "two dogs"])              # (2, 77) int64
    # [[49406, 320, 1125, 539, 320, 2368, 49407, 0, 0, …], …]

The pipeline for one caption, each step in its own module:
    clean.py        fix the text like ftfy, unescape HTML, collapse whitespace, lower-case
    pretokenize.py  cut it into words: letter runs, single digits, punctuation runs, contractions
    bytes_unicode   each word's UTF-8 bytes in a 256-character printable alphabet
    bpe.py          merge symbols by the learned ranks: 'photo</w>' is one token, 'tokenizer' three
then [SOT] + ids + [EOT], zero-padded (pad id 0, which is also the token '!': the model only reads
up to EOT) or truncated to context_length with EOT kept last, as OpenCLIP does.

The vocabulary is built as CLIP builds it: the 256 byte symbols (in bytes_to_unicode order),
the same 256 with '</w>', one token per merge in rank order, then <start_of_text> and
<end_of_text>. With OpenAI's file CLIP keeps the first 48,894 merges: 256 + 256 + 48,894 + 2 =
49,408 tokens, SOT = 49406, EOT = 49407.

`Tokenizer()` reads OpenAI's merges file, bpe_simple_vocab_16e6.txt.gz, which miniclip ships
beside this module (MIT, OpenAI: LICENSE-openai-clip.txt), as open_clip does; pass another merges
file, or the merges of a small vocabulary trained with `train_bpe` (train.py).

Checked in tests/tokenizer/test_tokenizer.py: whole (N, 77) arrays equal to
`open_clip.get_tokenizer('ViT-B-32')`'s on a varied corpus and on hypothesis-generated text.
Deliberate differences: ftfy's mojibake repair is not reproduced (clean.py); `decode` skips SOT
and stops at EOT (open_clip's spells out the special tokens and decodes padding as '!');
context_length must be at least 2.
"""
from pathlib import Path

import numpy as np

from miniclip.tokenizer.bpe import END_OF_WORD, bpe, word_symbols
from miniclip.tokenizer.bytes_unicode import BYTE_ENCODER, bytes_to_symbols, symbols_to_bytes
from miniclip.tokenizer.clean import clean
from miniclip.tokenizer.merges_file import read_merges, write_merges
from miniclip.tokenizer.pretokenize import SPECIAL_TOKENS, pretokenize

CLIP_VOCAB_SIZE = 49408
OPENAI_MERGES = Path(__file__).parent / "bpe_simple_vocab_16e6.txt.gz"   # OpenAI CLIP's, shipped
BASE_VOCAB_SIZE = 2 * 256 + len(SPECIAL_TOKENS)  # byte symbols, with and without </w>, specials


class Tokenizer:
    """Byte-level BPE tokenizer, id-for-id compatible with OpenCLIP's SimpleTokenizer.

    merges_path:    a merges file (plain or gzip); default: OpenAI's (OPENAI_MERGES)
    context_length: length of every row that __call__ returns (CLIP: 77)
    vocab_size:     use the first vocab_size - 514 merges of the file; by default all of them,
                    but at most CLIP's 48,894 (vocab 49,408), which is what OpenAI's file needs
    merges:         instead of a path, the list of (first, second) merges (train.py uses this)
    use_libraries:  clean with ftfy and cut words with `regex` when they are installed (the `text`
                    extra: exactly OpenCLIP's), else with the readable re-implementations here
    """

    def __init__(self, merges_path=None, context_length=77, vocab_size=None, merges=None, use_libraries=True):
        if merges_path is not None and merges is not None:
            raise ValueError("Tokenizer takes a merges file or a list of merges, not both")
        if merges_path is None and merges is None:
            merges_path = OPENAI_MERGES
        if context_length < 2:
            raise ValueError(f"context_length must leave room for SOT and EOT (>= 2), got {context_length}")
        source = merges_path if merges is None else "the given merges"
        merges = read_merges(merges_path) if merges is None else [tuple(m) for m in merges]
        if vocab_size is None:
            vocab_size = min(len(merges) + BASE_VOCAB_SIZE, CLIP_VOCAB_SIZE)
        if not BASE_VOCAB_SIZE <= vocab_size <= len(merges) + BASE_VOCAB_SIZE:
            raise ValueError(f"vocab_size={vocab_size} needs {vocab_size - BASE_VOCAB_SIZE} merges "
                             f"(vocab = 512 byte tokens + merges + 2 special tokens), but "
                             f"{source} has {len(merges)}")
        self.merges = merges[:vocab_size - BASE_VOCAB_SIZE]
        self.context_length = context_length
        self.use_libraries = use_libraries
        self.decoder = _build_vocabulary(self.merges, source)   # id → token string
        self.encoder = {token: i for i, token in enumerate(self.decoder)}
        self.ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self.sot_token_id = self.encoder[SPECIAL_TOKENS[0]]
        self.eot_token_id = self.encoder[SPECIAL_TOKENS[1]]
        # Word → ids. Captions repeat words, so after a warm-up almost every word is a dict
        # look-up instead of a BPE loop. Unbounded, as in CLIP.
        self._cache = {}

    @classmethod
    def from_file(cls, path, context_length=77, vocab_size=None):
        return cls(path, context_length=context_length, vocab_size=vocab_size)

    def save(self, path):
        """Write the merges in CLIP's file format (gzip if `path` ends in .gz)."""
        write_merges(path, self.merges)

    @property
    def vocab_size(self):
        return len(self.decoder)

    def encode(self, text):
        """One caption → its token ids, without SOT/EOT: 'a cat' → [320, 2368]."""
        ids = []
        for word in pretokenize(clean(text, self.use_libraries), self.use_libraries):
            word_ids = self._cache.get(word)
            if word_ids is None:
                word_ids = self._cache[word] = self._encode_word(word)
            ids.extend(word_ids)
        return ids

    def _encode_word(self, word):
        if word in SPECIAL_TOKENS:  # the literal text '<start_of_text>' is the SOT token, as in CLIP
            return (self.encoder[word],)
        return tuple(self.encoder[token] for token in bpe(word_symbols(bytes_to_symbols(word)), self.ranks))

    def __call__(self, texts, context_length=None, truncate=True):
        """Captions → (N, context_length) int64: [SOT] + ids + [EOT], then zeros.

        A caption too long for the context keeps its first context_length - 1 tokens and ends
        with EOT (OpenCLIP's rule; the text tower pools the features at EOT, so it must be there).
        With truncate=False such a caption raises a ValueError instead.
        """
        if isinstance(texts, str):
            texts = [texts]
        context_length = context_length or self.context_length
        tokens = np.zeros((len(texts), context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id] + self.encode(text) + [self.eot_token_id]
            if len(ids) > context_length:
                if not truncate:
                    shown = text if len(text) <= 60 else text[:57] + "..."
                    raise ValueError(f"caption {row} ({shown!r}) is {len(ids)} tokens long with SOT "
                                     f"and EOT, more than context_length={context_length}; "
                                     f"shorten it or pass truncate=True")
                ids = ids[:context_length - 1] + [self.eot_token_id]
            tokens[row, :len(ids)] = ids
        return tokens

    def decode(self, ids):
        """Token ids → text, each word followed by a space: [320, 2368] → 'a cat '.

        SOT is skipped and reading stops at the first EOT, so a row of __call__'s output decodes
        to its caption (the zeros after EOT are padding, not the token '!'). A 2-D array gives a
        list of strings. Bytes that do not form valid UTF-8 (a truncated multi-byte character)
        become U+FFFD, as in CLIP.
        """
        ids = np.asarray(ids)
        if ids.ndim == 2:
            return [self.decode(row) for row in ids]
        ids = ids.tolist()
        if self.eot_token_id in ids:
            ids = ids[:ids.index(self.eot_token_id)]
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is outside the vocabulary (0..{self.vocab_size - 1})")
        symbols = "".join(self.decoder[i] for i in ids if i != self.sot_token_id)
        return symbols_to_bytes(symbols).decode("utf-8", errors="replace").replace(END_OF_WORD, " ")

    def __repr__(self):
        return f"Tokenizer(vocab_size={self.vocab_size}, context_length={self.context_length})"


def _build_vocabulary(merges, source):
    """The token strings in id order; each merge must join two tokens that already exist."""
    tokens = list(BYTE_ENCODER.values())
    tokens += [token + END_OF_WORD for token in tokens]
    known = set(tokens)
    for rank, (first, second) in enumerate(merges):
        for part in (first, second):
            if part not in known:
                raise ValueError(f"{source}: merge {rank} ({first!r}, {second!r}) uses {part!r}, "
                                 f"which is neither a byte symbol nor the result of an earlier merge; "
                                 f"is this a merges file for a byte-level BPE?")
        if first + second in known:
            # A second merge making the same token would give one token two ids.
            raise ValueError(f"{source}: merge {rank} ({first!r}, {second!r}) makes "
                             f"{first + second!r}, which an earlier merge already made")
        known.add(first + second)
        tokens.append(first + second)
    return tokens + list(SPECIAL_TOKENS)
