"""Caption cleaning, exactly as OpenCLIP does it before tokenising — without ftfy.

OpenCLIP's `SimpleTokenizer` (clean='lower', the default for every CLIP model) runs

    ftfy.fix_text(text) → html.unescape twice → strip → " ".join(text.split()) → lower()

`clean()` below does the same. When ftfy is installed (the optional `text` extra) it calls
ftfy.fix_text itself, exactly OpenCLIP's; ftfy is not a miniclip dependency, so `fix_text()`
re-implements, as the readable fallback, the part of `ftfy.fix_text` (ftfy 6.3, default settings)
that changes real captions. Per line
(ftfy works line by line), and repeated until nothing changes, in ftfy's order:

1. HTML entities: '&amp;', '&eacute;', '&#39;', '&#x2019;' … but only names ending in ';', plus
   all-caps spellings such as '&EACUTE;'. Skipped from the first line that contains '<' to the
   end of the text (ftfy guesses such text is HTML on purpose and, in fix_text, the guess sticks).
2. C1 control characters U+0080-U+009F read as the Windows-1252 characters they usually are
   ('\\x93' → '“'), as web browsers do.
3. Latin ligatures and digraphs taken apart: 'ﬁ' → 'fi', 'ĳ' → 'ij' (not 'æ' or 'œ').
4. Full- and half-width forms to normal width: 'ＣＬＩＰ' → 'CLIP', U+3000 ideographic space → ' '.
5. Curly quotes straightened: ‘ ’ ‚ ‛ ʼ → ', “ ” „ ‟ → ".
6. Line breaks \\r\\n, \\r, U+2028, U+2029, U+0085 → \\n.
7. Surrogate code points: pairs joined into the character they encode, lone ones → U+FFFD.
8. ANSI terminal escapes ('\\x1b[31m') removed.
9. Control characters removed (C0 except \\t \\n \\f \\r, DEL, U+206A-206F, BOM, U+FFF9-FFFC).
10. Unicode NFC normalisation ('e' + combining acute → 'é').

NOT reproduced: ftfy's mojibake repair (`fix_encoding`: 'cafÃ©' → 'café', 'â€œ' → '“',
including its restore_byte_a0 / replace_lossy_sequences / decode_inconsistent_utf8 steps). It
decides by a statistical "badness" heuristic over hundreds of character patterns, far more code
than the rest of the tokenizer; it only fires on text that was already garbled by a wrong
decoding. On such text our ids differ from OpenCLIP's; on everything else they are identical.

Checked in tests/tokenizer/test_clean.py against ftfy + open_clip's cleaning on a caption corpus
and on hypothesis-generated text.
"""
import html
import html.entities
import re
import unicodedata

try:   # the optional `text` extra: ftfy itself, mojibake repair included
    from ftfy import fix_text as ftfy_fix_text
except ImportError:
    ftfy_fix_text = None

# --- 1. HTML entities, ftfy's conservative variant ---------------------------------------------
# Only entities that end in ';' (so "this&not that" keeps its '&not'), and the upper-case spelling
# of all-lower-case names when that spelling is not itself an entity ('&EACUTE;' → 'É').
_HTML_ENTITY = re.compile(r"&#?[0-9A-Za-z]{1,24};")
_HTML_ENTITIES = {}
for _name, _char in html.entities.html5.items():
    if _name.endswith(";"):
        _HTML_ENTITIES["&" + _name] = _char
        if _name == _name.lower() and html.unescape("&" + _name.upper()) == "&" + _name.upper():
            _HTML_ENTITIES["&" + _name.upper()] = _char.upper()


def _unescape_entity(match):
    entity = match.group(0)
    if entity in _HTML_ENTITIES:
        return _HTML_ENTITIES[entity]
    if entity.startswith("&#"):
        # A numeric reference: accept it only if html.unescape consumed the whole of it.
        char = html.unescape(entity)
        return entity if ";" in char else char
    return entity


# --- 2-5. Character-for-character replacements, applied in ftfy's order -------------------------
def _c1_as_windows_1252():
    table = {}
    for code in range(0x80, 0xA0):
        try:
            table[code] = bytes([code]).decode("cp1252")
        except UnicodeDecodeError:
            pass  # the five bytes Windows-1252 leaves undefined stay as they are
    return table


_LIGATURES = str.maketrans({
    "Ĳ": "IJ", "ĳ": "ij", "ŉ": "ʼn", "Ǳ": "DZ", "ǲ": "Dz", "ǳ": "dz", "Ǆ": "DŽ", "ǅ": "Dž", "ǆ": "dž",
    "Ǉ": "LJ", "ǈ": "Lj", "ǉ": "lj", "Ǌ": "NJ", "ǋ": "Nj", "ǌ": "nj",
    "ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "ſt", "ﬆ": "st",
})
# The Halfwidth and Fullwidth Forms block, each mapped to its NFKC (compatibility) equivalent.
_WIDTH = {0x3000: " "}
_WIDTH.update({code: unicodedata.normalize("NFKC", chr(code)) for code in range(0xFF01, 0xFFF0)
               if unicodedata.normalize("NFKC", chr(code)) != chr(code)})
_QUOTES = {code: "'" for code in [0x02BC, 0x2018, 0x2019, 0x201A, 0x201B]}
_QUOTES.update({code: '"' for code in [0x201C, 0x201D, 0x201E, 0x201F]})
_CHARACTER_FIXES = [_c1_as_windows_1252(), _LIGATURES, _WIDTH, _QUOTES]
# str.translate costs a dict look-up per character, so first check (in C) that the text has a
# character any table replaces; most captions, and all ASCII ones, have none.
_FIXABLE_CHARACTER = re.compile("[" + "".join(re.escape(chr(code)) for table in _CHARACTER_FIXES
                                              for code in sorted(table)) + "]")

# --- 6-9. ---------------------------------------------------------------------------------------
_LINE_BREAKS = [("\r\n", "\n"), ("\r", "\n"), ("\u2028", "\n"), ("\u2029", "\n"), ("\u0085", "\n")]
_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_TERMINAL_ESCAPE = re.compile("\033\\[((?:\\d|;)*)([a-zA-Z])")
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc]")


def _join_surrogates(match):
    high, low = (ord(c) for c in match.group(0))
    return chr(0x10000 + (high - 0xD800) * 0x400 + (low - 0xDC00))


def _fix_once(text, unescape_html):
    if unescape_html:
        text = _HTML_ENTITY.sub(_unescape_entity, text)
    if _FIXABLE_CHARACTER.search(text):
        for table in _CHARACTER_FIXES:
            text = text.translate(table)
    for old, new in _LINE_BREAKS:
        text = text.replace(old, new)
    if _SURROGATE.search(text):
        text = _SURROGATE.sub("\ufffd", _SURROGATE_PAIR.sub(_join_surrogates, text))
    text = _TERMINAL_ESCAPE.sub("", text)
    text = _CONTROL_CHARS.sub("", text)
    return unicodedata.normalize("NFC", text)


def fix_text(text, max_line_length=1_000_000):
    """ftfy.fix_text with default settings, minus mojibake repair (see the module docstring)."""
    pieces = []
    unescape_html = True
    start = 0
    while start < len(text):
        # ftfy fixes line by line (each piece keeps its '\n'), cutting very long lines.
        end = min(text.find("\n", start) + 1 or len(text), start + max_line_length)
        line = text[start:end]
        if "<" in line:
            unescape_html = False
        fixed = _fix_once(line, unescape_html)
        while fixed != line:  # a fix can enable another ('&amp;quot;' → '&quot;' → '"')
            line, fixed = fixed, _fix_once(fixed, unescape_html)
        pieces.append(fixed)
        start = end
    return "".join(pieces)


def clean(text, use_libraries=True):
    """The text OpenCLIP tokenises: fixed, entities unescaped, whitespace collapsed, lower-case.
    The fixing is ftfy's own when it is installed and use_libraries, else fix_text above; ASCII
    text, which ftfy's mojibake repair (the one difference) never changes, always takes fix_text,
    about 5x faster than ftfy."""
    use_ftfy = use_libraries and ftfy_fix_text is not None and not text.isascii()
    fix = ftfy_fix_text if use_ftfy else fix_text
    text = html.unescape(html.unescape(fix(text)))
    return " ".join(text.split()).lower()
