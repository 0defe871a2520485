"""Byte-pair encoding of one word: apply learned merges until none applies.

A word starts as its UTF-8 bytes in the byte alphabet (bytes_unicode.py), the last one marked as
the end of the word: 'cats' → ['c', 'a', 't', 's</w>'] (so 's</w>', a plural ending, is a
different token from the 's' that starts 'sun'). The merges are ranked by the order they were
learned; each round merges the adjacent pair with the lowest rank, everywhere in the word:

    ['c', 'a', 't', 's</w>'] → ['c', 'at', 's</w>'] → ['cat', 's</w>'] → ['cats</w>']

which is openai/CLIP's `SimpleTokenizer.bpe` (tokenizer-level ids are checked against open_clip
in tests/tokenizer/test_tokenizer.py). train.py learns merges with the same `merge_pair`.
"""
END_OF_WORD = "</w>"


def word_symbols(symbols):
    """'cats' (already in the byte alphabet) → ['c', 'a', 't', 's</w>']"""
    return list(symbols[:-1]) + [symbols[-1] + END_OF_WORD]


def merge_pair(symbols, pair):
    """Merge every occurrence of `pair` in `symbols`, left to right: ('a','a') on aaa → aa a."""
    first, second = pair
    merged = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
            merged.append(first + second)
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


def bpe(symbols, ranks):
    """Apply the merges in `ranks` ({pair: rank}, lower = learned earlier) to a list of symbols."""
    while len(symbols) > 1:
        best = min(zip(symbols, symbols[1:]), key=lambda pair: ranks.get(pair, float("inf")))
        if best not in ranks:
            break
        symbols = merge_pair(symbols, best)
    return symbols
