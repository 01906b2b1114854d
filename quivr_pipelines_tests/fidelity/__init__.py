"""The fidelity regression corpus: files built here, one per class of text that was once lost.

Each case module (`cases_*.py` in this package) exposes `CASES`, a list of `FidelityCase`: a
file name, a function that builds its bytes, and a sentence that the file holds. The corpus test
(`quivr_pipelines_tests/test_fidelity_corpus.py`) ingests every case into one KB through the
real pipeline and asserts that each sentence is in its document's chunks and that sparse search
for it finds that document. Build files by hand (raw PDF objects, encodings, MIME): never copy
them from ../shared/data, and never tune a parser to one case.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class FidelityCase:
    name: str  # the object key in the KB: a class name and an extension ("pdf-ligatures.pdf")
    build: Callable[[], bytes]
    sentence: str  # a sentence the document holds, as a reader sees it
    status: str = "ingested"
    # Shown when the case fails: what went wrong for this class before the fix.
    defect: str = ""


def all_cases() -> list[FidelityCase]:
    cases: list[FidelityCase] = []
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("cases_")):
        cases += importlib.import_module(f"{__name__}.{module}").CASES
    names = [c.name for c in cases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two fidelity cases share a name: {duplicates}")
    return cases
