"""The text-fidelity layer every parser's output goes through (issue 10, item 1).

A word is findable only if its stored form is the one a reader types. Parsers hand back
ligatures ("ﬁ" is one code point, so "beneficiary" is not in "beneﬁciary"), Arabic presentation
forms, full-width letters, NUL and other control characters, soft hyphens and zero-width spaces
inside words, cp1252 punctuation read as C1 controls, and letter-spaced headings
("S U M M A R Y"). `clean_text` repairs those, character by character where the fix is certain:

- **Compatibility characters, by class, not plain NFKC.** Measured on ../shared/data/docs
  (benchmarks/text_fidelity.py, RESULTS.md): NFKC also turns superscripts into digits
  ("10³" -> "103", "1º" -> "1o", "™" -> "TM"), fractions into "1⁄2", circled list markers into
  bare digits, spacing accents into a space and a combining mark ("don´t" -> "don ́t", a broken
  word) and Hangul compatibility jamo ("ㅋ") into conjoining jamo that render differently. Those
  classes are kept; the rest of NFKC's table applies (ligatures, presentation forms, wide and
  narrow forms, mathematical letters, the special spaces, Roman numerals, Kangxi radicals, "ſ"),
  then NFC, which composes decomposed accents and Hangul the way a query types them.
- **Characters that are not text are removed**: C0 controls but tab and newline (CR, VT, FF,
  LINE/PARAGRAPH SEPARATOR become newlines), DEL, lone surrogates (PostgreSQL and UTF-8 refuse
  them), noncharacters, BOMs / U+FEFF anywhere, zero-width space and word joiner, and soft
  hyphens (with the line break a soft hyphen stood before, as it only shows where a word was
  broken). C1 controls are cp1252 bytes read as latin-1 and become what cp1252 says ("\\x93" ->
  a quotation mark). ZWJ and ZWNJ stay (Persian, Indic scripts, emoji sequences), and so do
  variation selectors, emoji tag characters, bidi marks and private-use characters.
- **Letter-spaced runs** of four or more single cased letters (Latin, Greek, Cyrillic: scripts
  whose words are never one letter long for long) are joined only where the reading is
  unambiguous: wider gaps between words than between letters ("R E P O R T  O N  S A L E S"),
  or one capitalised word with even gaps ("S U M M A R Y") that is not a list of letters
  ("A B C D"). "I a m" style runs and any run in a caseless script (Korean single-syllable
  words, CJK) are left alone.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata

# NFKC classes (the decomposition tag) that would change what a reader sees or means.
KEPT_TAGS = {"<super>", "<sub>", "<fraction>", "<circle>"}
CONJOINING_JAMO = range(0x1100, 0x1200)
# Every compatibility decomposition lives in planes 0-2 (checked by the unit tests).
LAST_DECOMPOSED = 0x30000

REMOVED = ("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18"
           "\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f\u200b\u2060\ufeff\ufffe\uffff")
NEWLINES = "\x0b\x0c\u2028\u2029"
SOFT_HYPHEN = re.compile("\u00ad\\s*")
# The regex engine tests a class holding astral characters range by range (~0.4 us a character
# for this table), a BMP-only class by bitmap (~15 ns): astral characters get their own pass.
ASTRAL = re.compile("[\U00010000-\U0010ffff]")

LETTER = r"[^\W\d_]"
SPACED_RUN = re.compile(rf"(?<!\S){LETTER}(?: +{LETTER}){{3,}}(?!\S)")
# Any run of four single letters holds this; a literal first character makes it ~10x faster.
SPACED_HINT = re.compile(r" \w +\w ")
GAPS = re.compile(" +")
ARTICLE_AFTER = re.compile(r" +[a-z]")
MIN_SPACED_LETTERS = 4
# A run with word gaps: at least this many letters, one word of at least three.
MIN_GAPPED_LETTERS, MIN_LONGEST_WORD = 6, 3

# Metadata strings that reach a chunk or a reader (e-mail headers, table HTML, link texts).
TEXT_METADATA = ("subject", "sent_from", "sent_to", "cc_recipient", "bcc_recipient", "text_as_html",
                 "link_texts", "emphasized_text_contents")


def compatibility_target(char: str) -> str | None:
    """What NFKC makes of `char`, when its class is one we apply; None to keep it as it is."""
    decomposition = unicodedata.decomposition(char)
    if not decomposition.startswith("<"):
        return None
    tag, *codes = decomposition.split()
    if tag in KEPT_TAGS or (tag == "<compat>" and codes[0] == "0020" and len(codes) > 1):
        return None  # a spacing accent: NFKC makes it a space and a combining mark
    target = unicodedata.normalize("NFKC", char)
    if any(ord(c) in CONJOINING_JAMO for c in target):
        # Hangul compatibility jamo stay; half-width jamo become them (one step, not NFKC's two).
        step = chr(int(codes[0], 16)) if len(codes) == 1 else ""
        target = step if step and not any(ord(c) in CONJOINING_JAMO for c in step) else ""
    return target if target and target != char else None


@functools.cache
def _table() -> dict[str, str]:
    table = {}
    for code in range(0xA0, LAST_DECOMPOSED):
        target = compatibility_target(chr(code))
        if target is not None:
            table[chr(code)] = target
    for code in range(0x80, 0xA0):  # C1 controls: cp1252 read as latin-1
        try:
            table[chr(code)] = bytes([code]).decode("cp1252")
        except UnicodeDecodeError:
            table[chr(code)] = ""
    table.update(dict.fromkeys(REMOVED, ""))
    table.update(dict.fromkeys(NEWLINES, "\n"))
    table.update(dict.fromkeys(map(chr, range(0xFDD0, 0xFDF0)), ""))
    table.update(dict.fromkeys(map(chr, range(0xD800, 0xE000)), ""))  # lone surrogates
    return table


@functools.cache
def _bmp_pattern() -> re.Pattern:
    codes = sorted(ord(c) for c in _table() if ord(c) < 0x10000)
    ranges, start, previous = [], codes[0], codes[0]
    for code in codes[1:] + [-1]:
        if code != previous + 1:
            ranges.append(re.escape(chr(start)) + ("" if start == previous else "-" + re.escape(chr(previous))))
            start = code
        previous = code
    return re.compile("[" + "".join(ranges) + "]")


def normalise_characters(text: str) -> str:
    """Compatibility forms by class, controls out, then NFC."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\u00ad" in text:
        text = SOFT_HYPHEN.sub("", text)
    table = _table()
    text = _bmp_pattern().sub(lambda m: table[m.group()], text)
    if text.isascii():
        return text
    if ASTRAL.search(text):
        text = ASTRAL.sub(lambda m: table.get(m.group(), m.group()), text)
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def _is_list_of_letters(letters: list[str]) -> bool:
    """"A B C D", "A B C D F", "X X X X": options, grades or marks, not a word."""
    steps = [ord(b) - ord(a) for a, b in zip(letters, letters[1:])]
    return all(s in (1, 2) for s in steps) or all(s == 0 for s in steps)


def _join_run(match: re.Match) -> str:
    run = match.group()
    letters = run.split()
    if not all(c.lower() != c.upper() for c in letters):
        return run  # a caseless script: single-letter words are ordinary there
    gaps = [len(g) for g in GAPS.findall(run)]
    narrow = min(gaps)
    if max(gaps) > narrow:
        words, word = [], [letters[0]]
        for gap, letter in zip(gaps, letters[1:]):
            if gap > narrow:
                words.append(word)
                word = []
            word.append(letter)
        words.append(word)
        if len(letters) < MIN_GAPPED_LETTERS or max(map(len, words)) < MIN_LONGEST_WORD:
            return run
        return " ".join("".join(w) for w in words)
    if not all(c.isupper() for c in letters):
        return run  # "I a m", "h e l l o": which letters make a word is a guess
    tail = ""
    if letters[-1] in "AI" and ARTICLE_AFTER.match(match.string, match.end()):
        letters, tail = letters[:-1], " " + letters[-1]  # "S U M M A R Y A new approach"
    if len(letters) < MIN_SPACED_LETTERS or _is_list_of_letters(letters):
        return run
    return "".join(letters) + tail


def join_letter_spacing(text: str) -> str:
    return SPACED_RUN.sub(_join_run, text) if SPACED_HINT.search(text) else text


def clean_text(text: str) -> str:
    return join_letter_spacing(normalise_characters(text))


def readable_json(text: str) -> str:
    """unstructured pretty-prints a JSON element with `ensure_ascii`: "ni\\u00f1o" is not
    findable as "niño". Rewritten only when the text is exactly that pretty-print."""
    if "\\u" not in text:
        return text
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return text
    if json.dumps(value, indent=2, sort_keys=True) != text:
        return text  # not unstructured's rendering of a JSON value (a rehydrated element's text)
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def clean_elements(elements: list, json_text: bool = False) -> list:
    """`clean_text` on each element's text and indexed metadata strings, in place."""
    for element in elements:
        text = element.text or ""
        if json_text:
            text = readable_json(text)
        element.text = clean_text(text)
        metadata = element.metadata
        present = vars(metadata)  # the fields a parser set (the others read as None)
        for field in [f for f in TEXT_METADATA if f in present]:
            value = present[field]
            if isinstance(value, str):
                setattr(metadata, field, clean_text(value))
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                setattr(metadata, field, [clean_text(v) for v in value])
    return elements
