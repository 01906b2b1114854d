"""Cost of the text-fidelity layer (issue 10, item 1), and what NFKC would change, per document.

    python benchmarks/text_fidelity.py [DIR]   # default ../shared/data/docs

Every supported file is partitioned once (`_partition`, what `parse_document` calls, after the
same guards); then, on copies of its elements, the median of three `clean_elements` calls (the
layer) and of three plain `unicodedata.normalize("NFKC")` passes over the same texts, in the same
process, so the layer's share of parse time compares figures measured side by side. The
characters NFKC would change are counted by class (their decomposition tag), with what the layer
does with each class; letter-spaced runs the layer joins are listed for review.
"""

from __future__ import annotations

import collections
import copy
import statistics
import sys
import time
import unicodedata
from pathlib import Path

from quivr_pipelines.core.parsing import (
    JSON_EXTENSIONS,
    SUPPORTED_EXTENSIONS,
    _partition,
    detect,
    extension,
    fidelity,
    guards,
    offline_nlp,
)

TAG_NAMES = {
    "<font>": "mathematical/letterlike font", "<wide>": "full-width", "<narrow>": "half-width",
    "<initial>": "presentation form", "<medial>": "presentation form", "<final>": "presentation form",
    "<isolated>": "presentation form", "<super>": "superscript", "<sub>": "subscript",
    "<circle>": "circled", "<square>": "squared (CJK units)", "<fraction>": "fraction",
    "<vertical>": "vertical form", "<small>": "small form", "<noBreak>": "no-break space",
}


def nfkc_class(char: str) -> str | None:
    """The class of what NFKC does to `char`, or None when it leaves it alone."""
    if unicodedata.normalize("NFKC", char) == char:
        return None
    decomposition = unicodedata.decomposition(char)
    if not decomposition.startswith("<"):
        return "canonical (NFC does it too)"
    tag, *codes = decomposition.split()
    if "LIGATURE" in unicodedata.name(char, ""):
        return "ligature"
    if 0x3130 <= ord(char) <= 0x318F:
        return "Hangul compatibility jamo"
    if 0xF900 <= ord(char) <= 0xFAFF or 0x2F00 <= ord(char) <= 0x2FDF:
        return "CJK compatibility / radical"
    if tag == "<compat>" and codes[0] == "0020":
        return "space" if len(codes) == 1 else "spacing accent"
    return TAG_NAMES.get(tag, "other compatibility")


def median_ms(function, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def partition(path: Path):
    data, ext = path.read_bytes(), extension(path.name)
    guards.check_static_limits(data, ext, guards.ParseLimits())
    detect.refuse_encrypted_or_corrupt(data, ext)
    start = time.perf_counter()
    elements, _ = _partition(data, ext)
    return [e for e in elements if (e.text or "").strip()], (time.perf_counter() - start) * 1000


def layer_ms(elements: list, json_text: bool) -> float:
    copies = [copy.deepcopy(elements) for _ in range(3)]
    return median_ms(lambda: fidelity.clean_elements(copies.pop(), json_text=json_text))


def main(folder: Path) -> None:
    offline_nlp.install()
    fidelity.clean_text("warm-up \ufb01")  # the table (~0.1 s, once a process) is not a document's cost
    _partition(b"Warm-up. The river carries silt to the delta.", ".txt")
    occurrences, distinct, documents = collections.Counter(), collections.defaultdict(set), collections.defaultdict(set)
    rows, joins, changed_elements, total_elements = [], [], 0, 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = str(path.relative_to(folder))
        if extension(path.name) not in SUPPORTED_EXTENSIONS or name == "MANIFEST.tsv":
            continue
        try:
            elements, parse_ms = partition(path)
        except Exception as exc:  # noqa: BLE001 - refused documents have no text to clean
            print(f"{name:52} not parsed: {str(exc)[:60]}")
            continue
        if not elements:
            continue
        texts = [e.text for e in elements]
        clean_ms = layer_ms(elements, extension(path.name) in JSON_EXTENSIONS)
        nfkc_ms = median_ms(lambda texts=texts: [unicodedata.normalize("NFKC", t) for t in texts])
        cleaned = [fidelity.clean_text(t) for t in texts]
        changed_elements += sum(a != b for a, b in zip(texts, cleaned))
        total_elements += len(texts)
        for char, count in collections.Counter("".join(texts)).items():
            if char.isascii():
                continue
            kind = nfkc_class(char)
            if kind is not None:
                applied = fidelity.compatibility_target(char) is not None or kind.startswith("canonical")
                key = (kind, "applied" if applied else "kept")
                occurrences[key] += count
                distinct[key].add(char)
                documents[key].add(name)
        for text in texts:
            normalised = fidelity.normalise_characters(text)
            for match in fidelity.SPACED_RUN.finditer(normalised):
                joined = fidelity._join_run(match)
                joins.append((name, match.group(), joined))
        rows.append((name, len(texts), sum(map(len, texts)), parse_ms, clean_ms, nfkc_ms))
        print(f"{name:52} {len(texts):6} elements {rows[-1][2] / 1000:8.1f} k chars  parse {parse_ms:9.1f} ms"
              f"  layer {clean_ms:7.2f} ms ({100 * clean_ms / parse_ms:5.2f}%)  plain NFKC {nfkc_ms:6.2f} ms")

    parse_total, clean_total = sum(r[3] for r in rows), sum(r[4] for r in rows)
    print(f"\n{len(rows)} documents, {total_elements} elements ({changed_elements} changed by the layer), "
          f"{sum(r[2] for r in rows) / 1e6:.2f} M characters")
    print(f"layer: mean {statistics.mean(r[4] for r in rows):.2f} ms/doc, median "
          f"{statistics.median(r[4] for r in rows):.2f} ms, max {max(r[4] for r in rows):.1f} ms "
          f"({max(rows, key=lambda r: r[4])[0]}); {clean_total / 1000:.2f} s over {parse_total / 1000:.1f} s of "
          f"parsing = {100 * clean_total / parse_total:.2f}% of parse time (per-document share: median "
          f"{statistics.median(100 * r[4] / r[3] for r in rows):.2f}%, max "
          f"{max(100 * r[4] / r[3] for r in rows):.2f}%); plain NFKC {sum(r[5] for r in rows) / 1000:.2f} s")
    print("\ncharacters NFKC changes, by class (occurrences, distinct characters, documents; what the layer does)")
    for (kind, verdict), count in sorted(occurrences.items(), key=lambda kv: -kv[1]):
        sample = " ".join(sorted(distinct[(kind, verdict)])[:12])
        print(f"  {kind:34} {verdict:8} {count:8} {len(distinct[(kind, verdict)]):4} chars "
              f"{len(documents[(kind, verdict)]):3} docs  {sample!r}  e.g. {sorted(documents[(kind, verdict)])[:3]}")
    done = [j for j in joins if j[1] != j[2]]
    print(f"\nletter-spaced runs: {len(joins)} candidates, {len(done)} joined")
    for name, run, joined in joins[:40]:
        print(f"  {name:40} {run[:60]!r} -> {joined[:40]!r}" if run != joined else f"  {name:40} {run[:60]!r} kept")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/docs"))
