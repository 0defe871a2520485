"""How many short captions per second the tokenizer turns into an (N, 77) int64 array.

    python -m miniclip.tokenizer.benchmark PATH/TO/bpe_simple_vocab_16e6.txt.gz [--n 20000]

Captions are ~10 words drawn at random (fixed seed) from a list of ~120 caption words, with
punctuation and a number now and then. Two timings: "cold" starts with an empty word cache (the
first epoch over a dataset), "warm" tokenises the same captions again (every later epoch).
Pure Python, so it runs on one core; the time is dominated by cleaning and pre-tokenising,
since with a warm cache BPE is one dict look-up per word.
"""
import argparse
import random
import time

from miniclip.tokenizer.tokenizer import Tokenizer

_WORDS = """a an the two three photo picture image of with on in at near under over and dog dogs
cat cats man woman child children people person bike car bus train truck boat plane bird birds
horse cow sheep elephant giraffe zebra bear pizza sandwich cake table chair bed couch street road
field beach water ocean river mountain snow sky tree trees grass building city house room kitchen
bathroom window door wall red blue green white black yellow brown large small big little old young
standing sitting walking riding playing eating holding looking running flying parked covered
filled is are next to front top side group couple view close up it's there's""".split()
_EXTRAS = [",", ".", "!", "?", "1", "2", "10", "2024"]


def make_captions(n, seed=0):
    """`n` synthetic captions of 8-12 words."""
    rng = random.Random(seed)
    captions = []
    for _ in range(n):
        words = rng.choices(_WORDS, k=rng.randint(8, 12))
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), rng.choice(_EXTRAS))
        captions.append(" ".join(words).capitalize() + ".")
    return captions


def captions_per_second(tokenizer, captions):
    start = time.perf_counter()
    tokenizer(captions)
    return len(captions) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("merges_path", help="a merges file, e.g. open_clip.tokenizer.default_bpe()")
    parser.add_argument("--n", type=int, default=20000, help="number of captions")
    args = parser.parse_args()
    tokenizer = Tokenizer(args.merges_path)
    captions = make_captions(args.n)
    tokenizer("warm up the pre-tokeniser's pattern")  # built once, on first use (~0.2 s)
    cold = captions_per_second(tokenizer, captions)
    warm = captions_per_second(tokenizer, captions)
    print(f"{args.n} captions, {tokenizer}: cold cache {cold:,.0f} captions/s, "
          f"warm cache {warm:,.0f} captions/s")


if __name__ == "__main__":
    main()
