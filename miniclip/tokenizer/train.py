"""Learning BPE merges from a corpus, so a small model can have a small vocabulary.

Sennrich et al., "Neural Machine Translation of Rare Words with Subword Units" (2016), on bytes:

1. Clean and pre-tokenise every text exactly as the tokenizer will (clean.py, pretokenize.py) and
   count how often each word occurs. Each distinct word starts as its byte symbols, the last one
   marked '</w>' (bpe.py).
2. Count every adjacent pair of symbols, weighted by the word's frequency.
3. Merge the most frequent pair everywhere, record it as the next merge, update the counts.
   Ties go to the smallest pair in string order, so the result never depends on the order of
   the texts or of dict iteration.
4. Repeat until there are vocab_size - 514 merges.

The vocabulary then has 256 byte tokens + 256 byte tokens with '</w>' + one token per merge +
<start_of_text> + <end_of_text> = vocab_size: the same layout as CLIP's, so the merges are saved
in the same file format and loaded by the same Tokenizer.

Step 3 only re-counts the words that contain the merged pair (an index pair → words), with a heap
to find the most frequent pair, so each merge costs time in proportion to the words it touches,
not to the corpus.

Checked in tests/tokenizer/test_train.py: a hand-worked example, determinism, the requested
vocabulary size, and save/load round trips.
"""
import heapq
from collections import Counter, defaultdict

from miniclip.tokenizer.bpe import merge_pair, word_symbols
from miniclip.tokenizer.bytes_unicode import bytes_to_symbols
from miniclip.tokenizer.clean import clean
from miniclip.tokenizer.pretokenize import SPECIAL_TOKENS, pretokenize
from miniclip.tokenizer.tokenizer import BASE_VOCAB_SIZE, Tokenizer


def learn_merges(texts, num_merges, exact=True):
    """The first `num_merges` BPE merges of `texts`, most frequent pair first.

    When every word is already a single symbol there is nothing left to merge: that is an error
    if `exact`, otherwise the (fewer) merges found so far are returned."""
    word_counts = Counter(word for text in texts for word in pretokenize(clean(text))
                          if word not in SPECIAL_TOKENS)
    words = [word_symbols(bytes_to_symbols(word)) for word in word_counts]
    counts = list(word_counts.values())

    pair_counts = Counter()
    words_with = defaultdict(set)  # pair → indices of the words where it occurs (or once did)
    for i, symbols in enumerate(words):
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += counts[i]
            words_with[pair].add(i)
    # Max-heap by count (negated), ties by the pair itself. Entries go stale when a count
    # changes; a fresh entry is pushed then, and stale ones are recognised and dropped on pop.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    merges = []
    while len(merges) < num_merges:
        if not heap:
            if not exact:
                break
            raise ValueError(f"the corpus has only {len(merges)} possible merges, so vocab_size can "
                             f"be at most {BASE_VOCAB_SIZE + len(merges)}; use more text or a "
                             f"smaller vocab_size")
        negative_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair) != -negative_count:
            continue
        merges.append(pair)

        changed = set()
        for i in words_with.pop(pair):
            old, new = words[i], merge_pair(words[i], pair)
            if new == old:
                continue
            for p in zip(old, old[1:]):
                pair_counts[p] -= counts[i]
                changed.add(p)
            for p in zip(new, new[1:]):
                pair_counts[p] += counts[i]
                words_with[p].add(i)
                changed.add(p)
            words[i] = new
        for p in changed:
            if pair_counts[p] > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
            else:
                del pair_counts[p]
    return merges


def train_bpe(texts, vocab_size, context_length=77, exact=True):
    """A Tokenizer whose vocab_size - 514 merges are learned from `texts` (a list of captions).

    exact=False: at most vocab_size tokens, fewer if the captions run out of pairs to merge
    (a small caption vocabulary needs fewer tokens than asked for)."""
    if not isinstance(vocab_size, int) or vocab_size < BASE_VOCAB_SIZE:
        raise ValueError(f"vocab_size counts 256 byte tokens + 256 byte tokens with </w> + the "
                         f"merges + 2 special tokens, so it must be an int >= {BASE_VOCAB_SIZE}; "
                         f"got {vocab_size!r}")
    merges = learn_merges(texts, vocab_size - BASE_VOCAB_SIZE, exact=exact)
    return Tokenizer(merges=merges, context_length=context_length)
