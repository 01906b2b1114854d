"""Chunking before and after issue 10, item 3, in one run.

    python benchmarks/chunking.py [N]   # N NFCorpus entries (default: all 3,395)

1. NFCorpus (`../shared/data/retrieval/nfcorpus/corpus.jsonl`) written as Markdown files
   "# {title}\\n\\n{text}" and chunked with the default KbConfig: the share of documents with a
   title-only chunk and the share of chunks that are one. The stored copy has an empty title for
   every entry (a "# " line is no heading), so the entry's id stands in as a (short) title.
2. The spreadsheets (xlsx, xls, csv, tsv) of `../shared/data/docs`: chunk lengths.

"Before" is the former code path, kept here: `chunk_by_title` on the elements, a sheet parsed
with unstructured's sub-table detection (its default). "After" is `chunk_document`.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from quivr_pipelines.core.catalog.repository import KbConfig
from quivr_pipelines.core.chunking import chunk_document
from quivr_pipelines.core.parsing import NO_LANGUAGE_DETECTION, extension, offline_nlp, parse_document
from quivr_pipelines.core.parsing.detect import classify_parser_error
from quivr_pipelines.settings import Settings

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHEETS = (".xlsx", ".xls", ".csv", ".tsv")


def before_chunks(elements: list, config: KbConfig) -> list[tuple[str, list[str]]]:
    """The former `chunk_elements`: (text, element categories) per chunk."""
    from unstructured.chunking.title import chunk_by_title

    max_chars = config.chunk_max_characters
    composite = chunk_by_title(
        elements, max_characters=max_chars,
        new_after_n_chars=min(config.chunk_new_after_characters, max_chars),
        combine_text_under_n_chars=min(config.chunk_combine_under_characters, max_chars),
        overlap=min(config.chunk_overlap_characters, max_chars // 2), multipage_sections=True)
    out = []
    for element in composite:
        text = (element.text or "").strip()
        originals = getattr(element.metadata, "orig_elements", None) or [element]
        if text:
            out.append((text, sorted({o.category for o in originals})))
    return out


def before_sheet_elements(path: Path) -> list:
    """A sheet as the former parser read it: unstructured's default sub-table detection."""
    import tempfile

    from unstructured.partition.auto import partition

    if extension(path.name) not in (".xlsx", ".xls"):
        return parse_document(path.read_bytes(), path.name).elements
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / f"document{extension(path.name)}"
        local.write_bytes(path.read_bytes())
        try:
            elements = partition(filename=str(local), strategy="fast", languages=NO_LANGUAGE_DETECTION)
        except Exception as exc:
            raise classify_parser_error(exc, extension(path.name)) from exc
    return [e for e in elements if (e.text or "").strip()]


def lengths(values: list[int]) -> str:
    if not values:
        return "no chunks"
    small = sum(1 for v in values if v <= 10)
    return (f"{len(values):4d} chunks, min {min(values):5d}, median {int(statistics.median(values)):5d},"
            f" max {max(values):5d}, <=10 chars {small:3d}")


def nfcorpus(config: KbConfig, limit: int | None) -> None:
    rows = [json.loads(line) for line in (DATA / "retrieval" / "nfcorpus" / "corpus.jsonl").open()][:limit]
    docs = [0, 0]
    chunks = [0, 0]
    alone = [0, 0]
    for row in rows:
        title = row.get("title", "").strip() or row["_id"]
        parsed = parse_document(f"# {title}\n\n{row['text']}\n".encode(), f"{row['_id']}.md")
        old = before_chunks(parsed.elements, config)
        new = chunk_document(parsed, config)
        old_alone = sum(1 for _, categories in old if set(categories) <= {"Title"})
        new_alone = sum(1 for c in new if set(c.element_categories) <= {"Title"})
        for i, (n, a) in enumerate(((len(old), old_alone), (len(new), new_alone))):
            chunks[i] += n
            alone[i] += a
            docs[i] += bool(a)
    print(f"NFCorpus, {len(rows)} documents as '# title' Markdown, default KbConfig "
          f"({config.chunk_max_characters}/{config.chunk_new_after_characters}/"
          f"{config.chunk_combine_under_characters}/{config.chunk_overlap_characters}):")
    for label, i in (("before", 0), ("after ", 1)):
        print(f"  {label}: {docs[i]:5d} documents with a title-only chunk ({docs[i] / len(rows):.1%}),"
              f" {alone[i]:5d} of {chunks[i]} chunks title-only ({alone[i] / max(chunks[i], 1):.1%})")


def sheets(config: KbConfig) -> None:
    print("Spreadsheets of ../shared/data/docs, chunk lengths in characters (payload text):")
    for path in sorted((DATA / "docs").iterdir()):
        if extension(path.name) not in SHEETS:
            continue
        try:
            old = [len(text) for text, _ in before_chunks(before_sheet_elements(path), config)]
            parsed = parse_document(path.read_bytes(), path.name)
        except Exception as exc:  # noqa: BLE001 - an unreadable sample is reported, not measured
            print(f"  {path.name}: {str(exc)[:70]}")
            continue
        new = [len(c.text) for c in chunk_document(parsed, config)]
        print(f"  {path.name}\n    before: {lengths(old)}\n    after : {lengths(new)}")


def main() -> None:
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else None
    offline_nlp.install()
    settings = Settings()
    config = KbConfig(name="", chunk_max_characters=settings.chunk_max_characters,
                      chunk_new_after_characters=settings.chunk_new_after_characters,
                      chunk_combine_under_characters=settings.chunk_combine_under_characters,
                      chunk_overlap_characters=settings.chunk_overlap_characters)
    sheets(config)
    nfcorpus(config, limit)


if __name__ == "__main__":
    main()
