"""CLIP's byte-level BPE tokenizer (id-for-id compatible with OpenCLIP) and BPE training.

    from miniclip.tokenizer import Tokenizer, train_bpe
    tokenizer = Tokenizer()                                    # OpenAI's 49,408-token vocabulary (shipped)
    small = train_bpe(captions, vocab_size=2048)               # or learn a small one
    small.save("merges.txt.gz"); Tokenizer.from_file("merges.txt.gz")

Modules, in pipeline order: clean (ftfy-like fixes, HTML, whitespace, lower-case) → pretokenize
(CLIP's word pattern without the `regex` module) → bytes_unicode (the 256-symbol byte alphabet) →
bpe (merging by rank) → tokenizer (vocabulary, SOT/EOT, padding, truncation, decode);
merges_file (the file format), train (learning merges), benchmark (captions per second).
"""
from miniclip.tokenizer.clean import clean, fix_text
from miniclip.tokenizer.pretokenize import pretokenize
from miniclip.tokenizer.bytes_unicode import bytes_to_unicode
from miniclip.tokenizer.tokenizer import Tokenizer
from miniclip.tokenizer.train import learn_merges, train_bpe

__all__ = ["Tokenizer", "train_bpe", "learn_merges", "clean", "fix_text", "pretokenize",
           "bytes_to_unicode"]
