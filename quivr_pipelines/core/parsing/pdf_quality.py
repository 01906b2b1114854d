"""How plausible one page's extracted text is: what decides whether a second PDF reader runs.

A reader's text for a page is implausible when it is empty, holds defects no later repair can
undo (NUL and other control characters, `(cid:NN)` placeholders, U+FFFD: the letters are gone,
and removing a NUL turns "difficulties" into "diculties"), or is mostly single-letter runs (a
rotated text line that a horizontal layout cut into one line per letter, or letter-spaced
text). Ligature code points (U+FB00-FB06) are letters here: the text-fidelity layer expands
them. The score compares two readers' texts for the same page: letters in words of two or more
letters, minus a penalty per defect.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CID = re.compile(r"\(cid:\d+\)")
# C0 controls other than tab, line feed, form feed and carriage return; DEL; U+FFFD.
_BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f\ufffd]")
_TOKEN = re.compile(r"\S+")
DEFECT_PENALTY = 10  # letters one defect costs: a page with lost letters loses to a clean one
# Share of a page's words that sit in runs of 3+ single-letter words past which the page is
# letter-spaced or cut into letters.
SINGLE_LETTER_SHARE = 0.3
MIN_RUN = 3


@dataclass(frozen=True)
class PageQuality:
    letters: int  # letters and digits in words of two or more of them
    defects: int  # NUL/control characters, (cid:NN) placeholders, U+FFFD
    words: int
    single_letter_words: int  # words in runs of MIN_RUN or more one-letter words (letters, not digits)

    @property
    def empty(self) -> bool:
        return self.letters == 0 and self.single_letter_words == 0

    @property
    def letter_spaced(self) -> bool:
        return self.single_letter_words >= MIN_RUN and self.single_letter_words > SINGLE_LETTER_SHARE * self.words

    @property
    def plausible(self) -> bool:
        return not self.empty and self.defects == 0 and not self.letter_spaced

    @property
    def score(self) -> int:
        return self.letters - DEFECT_PENALTY * self.defects

    @property
    def readable(self) -> bool:
        """Worth indexing at all: some real words, not only placeholders and stray letters."""
        return self.score > 0

    def problems(self) -> list[str]:
        found = []
        if self.empty:
            found.append("no text")
        if self.defects:
            found.append(f"{self.defects} lost characters (NUL, control, (cid:NN) or U+FFFD)")
        if self.letter_spaced:
            found.append(f"{self.single_letter_words} of {self.words} words are single letters")
        return found


def assess(text: str) -> PageQuality:
    defects = len(_CID.findall(text))
    clean = _CID.sub(" ", text)
    defects += len(_BAD_CHARS.findall(clean))
    clean = _BAD_CHARS.sub(" ", clean)
    letters = words = single = run = 0
    for token in _TOKEN.findall(clean):
        words += 1
        alnum = sum(ch.isalnum() for ch in token)
        if len(token) == 1 and token.isalpha():  # digits alone are table cells, not cut words
            run += 1
            continue
        single += run if run >= MIN_RUN else 0
        run = 0
        if alnum >= 2:
            letters += alnum
    single += run if run >= MIN_RUN else 0
    return PageQuality(letters=letters, defects=defects, words=words, single_letter_words=single)
