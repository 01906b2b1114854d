"""Cost of the per-page PDF fallback (issue 10, item 2), before and after, in the same run.

    python benchmarks/pdf_fallback.py [DIR] [--repeats N]   # default /work/shared/data/docs/pdf, N=3

For every PDF: the seconds of the previous extraction (pdfminer's `extract_pages` over the whole
file, as `partition_pdf_text` did before the fallback, copied below as `before`) and of the current
one (`pdf.partition_pdf_text`: pdfminer page by page, pypdf on the pages that need it), alternated
file by file (best of N each, a single run for files over 1 MB; the smallest file is run
once untimed so that imports and the classifier's model are paid outside) so that both see the same
machine load; the pages pypdf read, the
coverage, and the ratio after/before per file and over all files.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

from quivr_pipelines.core.errors import IngestionError
from quivr_pipelines.core.parsing import offline_nlp
from quivr_pipelines.core.parsing.pdf import _text_boxes, partition_pdf_text


def before(data: bytes) -> int:
    """The extraction before the fallback (elements built the same way); returns the elements."""
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LAParams
    from unstructured.cleaners.core import clean_extra_whitespace
    from unstructured.partition.text import element_from_text

    elements = 0
    try:
        for page in extract_pages(io.BytesIO(data), laparams=LAParams(all_texts=True)):
            for box in _text_boxes(page):
                text = clean_extra_whitespace(box.get_text().replace("-\n", "").replace("\n", " "))
                if text:
                    element_from_text(text)
                    elements += 1
    except Exception:  # noqa: BLE001 - what it raised was the verdict then; timing is what counts here
        pass
    return elements


def after(data: bytes):
    try:
        return partition_pdf_text(data)
    except IngestionError as exc:
        return exc


def best(function, data: bytes, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function(data)
        times.append(time.perf_counter() - started)
    return min(times), result


def main(folder: Path, repeats: int) -> None:
    import logging

    logging.disable(logging.WARNING)  # pdfminer and pypdf warn on every damaged object
    offline_nlp.install()
    paths = sorted(folder.glob("*.pdf"))
    smallest = min(paths, key=lambda p: p.stat().st_size).read_bytes()
    before(smallest)  # imports and the classifier's model, outside the timings
    after(smallest)
    total_before = total_after = 0.0
    print(f"{'file':48} {'before s':>9} {'after s':>9} {'ratio':>6}  pages  with text  pypdf pages  unread")
    for path in paths:
        data = path.read_bytes()
        runs = repeats if len(data) <= 1_000_000 else 1
        seconds_before, _ = best(before, data, runs)
        seconds_after, result = best(after, data, runs)
        total_before += seconds_before
        total_after += seconds_after
        if isinstance(result, IngestionError):
            detail = f"  {result.error_type}"
        else:
            detail = (f"  {result.pages:5}  {result.pages_with_text:9}  {len(result.second_reader_pages):11}"
                      f"  {list(result.unread_pages)}")
        print(f"{path.name:48} {seconds_before:9.3f} {seconds_after:9.3f} {seconds_after / seconds_before:6.2f}{detail}",
              flush=True)
    print(f"all {len(paths)} PDFs: before {total_before:.2f} s, after {total_after:.2f} s,"
          f" ratio {total_after / total_before:.3f}")


if __name__ == "__main__":
    args = sys.argv[1:]
    repeats = 3
    if "--repeats" in args:
        at = args.index("--repeats")
        repeats = int(args[at + 1])
        del args[at:at + 2]
    main(Path(args[0] if args else "/work/shared/data/docs/pdf"), repeats)
