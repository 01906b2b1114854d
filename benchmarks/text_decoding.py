"""Cost of the one text decoder (issue 10, item 1) per document.

    python benchmarks/text_decoding.py [DIR]   # default ../shared/data/docs

For every text-like file (the extensions `parse_document` decodes itself): the median of five
`decode_text` calls on its bytes as stored (UTF-8 or ASCII: the strict UTF-8 path), and on the
same text re-encoded as cp1252 where it can be (the charset-normalizer path, the slow one).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from quivr_pipelines.core.parsing import MARKUP_EXTENSIONS, TEXT_EXTENSIONS, extension
from quivr_pipelines.core.parsing.text import decode_text


def median_ms(data: bytes, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        decode_text(data)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(folder: Path) -> None:
    stored, legacy, total_bytes = [], [], 0
    for path in sorted(folder.iterdir()):
        if extension(path.name) not in TEXT_EXTENSIONS | MARKUP_EXTENSIONS:
            continue
        data = path.read_bytes()
        total_bytes += len(data)
        stored.append(median_ms(data))
        try:
            cp1252 = decode_text(data).encode("cp1252")
        except UnicodeEncodeError:
            cp1252 = None
        legacy_ms = median_ms(cp1252) if cp1252 is not None and not cp1252.isascii() else None
        if legacy_ms is not None:
            legacy.append(legacy_ms)
        shown = "-" if legacy_ms is None else f"{legacy_ms:.2f}"
        print(f"{path.name:40} {len(data) / 1000:9.1f} KB  stored {stored[-1]:7.3f} ms  cp1252 {shown} ms")
    print(f"{len(stored)} text-like documents, {total_bytes / 1e6:.2f} MB: as stored mean "
          f"{statistics.mean(stored):.3f} ms, max {max(stored):.3f} ms a document; "
          f"re-encoded cp1252 ({len(legacy)} with non-ASCII) mean {statistics.mean(legacy):.1f} ms, "
          f"max {max(legacy):.1f} ms")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/docs"))
