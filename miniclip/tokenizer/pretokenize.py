"""Pre-tokenisation: cut cleaned text into the words that BPE then splits into sub-word tokens.

CLIP's pattern (openai/CLIP `simple_tokenizer.py`; OpenCLIP spells the special tokens
<start_of_text>/<end_of_text>, OpenAI <|startoftext|>/<|endoftext|>) is, with IGNORECASE,

    <start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+

i.e. at each position, the first alternative that matches wins: a special token, an English
contraction, a run of letters, ONE digit (so '2024' is four words — numbers get no merges), or a
run of anything else that is not whitespace ('...', '!?', '😀'). Whitespace only separates.

\\p{L} / \\p{N} are the Unicode general categories Letter (Lu Ll Lt Lm Lo) and Number (Nd Nl No).
When the `regex` module is installed (the optional `text` extra), `pretokenize` uses this very
pattern with it, as OpenCLIP does. Python's built-in `re` has no \\p{...}, and miniclip does not
depend on `regex`; so, as the readable fallback, `word_pattern()` writes those classes out as
explicit code-point ranges, computed once from `unicodedata`, and compiles an equivalent stdlib
`re` pattern. Three details make it exact:

- `\\s` in `regex` is Unicode White_Space, which lacks the four ASCII separators U+001C-U+001F
  that Python's str.isspace() (and `re`'s \\s) count as space: they are "other" characters here.
- IGNORECASE (which `regex` applies to the classes too) changes exactly one character's class:
  U+0345 COMBINING GREEK YPOGEGRAMMENI (a mark) case-folds to the letter ι, so it matches neither
  [\\p{L}] nor the negated class, and is skipped like whitespace. IGNORECASE is therefore kept only
  for the literal alternatives (where '<START_OF_TEXT>' and "'ſ" — long s folds to s — match).
- The classes follow Python's Unicode database (`unicodedata.unidata_version`), `regex` ships
  its own, newer one: characters assigned after Python's version (Unicode 14 for Python 3.11)
  are "other" here but may be letters or digits for `regex`, and then our ids differ from
  OpenCLIP's. These are mostly historic scripts and rare CJK ideographs, rare in captions.

Checked in tests/tokenizer/test_pretokenize.py: the class of every code point, and random strings,
against the `regex` module's pattern.
"""
import functools
import re
import sys
import unicodedata

try:   # the optional `text` extra: the module OpenCLIP's pattern is written for
    import regex
except ImportError:
    regex = None

SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
_NOT_WHITESPACE_IN_REGEX = "\x1c\x1d\x1e\x1f"
_IGNORED = "\u0345"


def _ranges_as_class(codes):
    """[65, 66, 67, 97] → '\\U00000041-\\U00000043\\U00000061': the body of a [...] class."""
    parts = []
    start = codes[0]
    for prev, code in zip(codes, codes[1:] + [None]):
        if code != prev + 1:  # `prev` closes a run of consecutive code points
            parts.append(f"\\U{start:08x}" if start == prev else f"\\U{start:08x}-\\U{prev:08x}")
            start = code
    return "".join(parts)


@functools.cache
def character_classes():
    """The code points of \\p{L}, \\p{N} and regex's \\s, from Python's Unicode database (~0.2 s)."""
    letters, numbers, spaces = [], [], []
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        category = unicodedata.category(char)
        if category[0] == "L":
            letters.append(code)
        elif category[0] == "N":
            numbers.append(code)
        elif char.isspace() and char not in _NOT_WHITESPACE_IN_REGEX:
            spaces.append(code)
    return letters, numbers, spaces


@functools.cache
def word_pattern(max_code_point=sys.maxunicode):
    """CLIP's pattern as a compiled stdlib `re` pattern, for text of code points <= max_code_point."""
    letters, numbers, spaces = (_ranges_as_class([code for code in codes if code <= max_code_point])
                                for codes in character_classes())
    literals = "|".join(re.escape(s) for s in SPECIAL_TOKENS + CONTRACTIONS)
    # Letters and numbers are tried before the literals, unlike CLIP's order: every literal starts
    # with ' or <, which are neither, so no match changes, and most positions are letters.
    return re.compile(f"[{letters}]+|[{numbers}]|(?i:{literals})"
                      f"|[^{spaces}{letters}{numbers}{_IGNORED}]+")


@functools.cache
def regex_word_pattern():
    """CLIP's pattern itself, compiled by the `regex` module."""
    specials = "|".join(SPECIAL_TOKENS + CONTRACTIONS)
    return regex.compile(specials + r"|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+", regex.IGNORECASE)


def pretokenize(text, use_libraries=True):
    """'a dog's 2 toys!' → ['a', 'dog', "'s", '2', 'toys', '!'] (with `regex` when it is
    installed and use_libraries, else with word_pattern's stdlib equivalent)"""
    if use_libraries and regex is not None:
        return regex_word_pattern().findall(text)
    # re tests a character against a class's Basic Multilingual Plane part with one table look-up,
    # but walks the ~250 ranges above U+FFFF one by one: text without such characters (most
    # captions: emoji are the common exception) uses the pattern built for the BMP, ~7x faster.
    in_bmp = text.isascii() or max(text) <= "\uffff"
    return word_pattern(0xFFFF if in_bmp else sys.maxunicode).findall(text)
