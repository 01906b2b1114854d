"""Measure what parsing costs, to set the bounded-parsing defaults (issue 9, item 4).

    python benchmarks/parse_limits.py docs [DIR|FILE ...]  # every reference document: time, CPU, peak RSS, static figures
    python benchmarks/parse_limits.py curves       # cost of cells (XLSX, CSV) and of one long line
    python benchmarks/parse_limits.py hostile      # time to refuse each hostile file, guards on and off

Each document is parsed in a warm worker of a one-worker `ParserPool` (limits off for `docs` and
`curves`, so nothing is refused), the way a run parses it; seconds and peak RSS are measured in
the worker (`ParseResult.seconds`, `peak_rss_mb`: VmHWM reset before each document). Prints
Markdown tables for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import io
import statistics
import sys
import time
import zipfile
from pathlib import Path

from quivr_pipelines.core.catalog.repository import KbConfig
from quivr_pipelines.core.parsing import extension, guards
from quivr_pipelines.core.parsing.guards import ParseLimits
from quivr_pipelines.core.parsing.workers import ParserPool

CONFIG = KbConfig(name="bench", chunk_max_characters=1500, chunk_new_after_characters=1200,
                  chunk_combine_under_characters=200, chunk_overlap_characters=0)
OFF = ParseLimits(timeout_seconds=900, memory_mb=16_000, max_uncompressed_mb=1e6, max_compression_ratio=1e9,
                  max_archive_members=10**9, max_cells=10**12, max_line_characters=10**12)


def static_figures(data: bytes, ext: str) -> dict:
    figures: dict = {}
    if ext in guards.ZIP_PACKAGES:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                members = archive.infolist()
                size = sum(m.file_size for m in members)
                figures["members"] = len(members)
                figures["uncompressed_mb"] = size / 2**20
                figures["ratio"] = max([size / max(1, sum(m.compress_size for m in members))]
                                       + [m.file_size / max(1, m.compress_size) for m in members
                                          if m.file_size >= guards.RATIO_MIN_MEMBER_BYTES])
                if ext == ".xlsx":
                    figures["cells"] = sum(guards._dimension_cells(archive.open(m).read(4096)) for m in members
                                           if m.filename.startswith("xl/worksheets/") and m.filename.endswith(".xml"))
        except zipfile.BadZipFile:
            pass
    if ext in guards.LINE_LIMITED:
        figures["line"] = guards.longest_line(data)
        if ext in guards.CELL_COUNTED_TEXT:
            figures["cells"] = data.count(guards.CELL_COUNTED_TEXT[ext]) + data.count(b"\n") + 1
    return figures


def parse_one(pool: ParserPool, key: str, data: bytes):
    started = time.perf_counter()
    result = pool.submit([(key, data, None)], CONFIG).results()[key]
    return result, time.perf_counter() - started


def docs(paths: list[Path]) -> None:
    rows = []
    print("| document | KB | outcome | parse s | CPU s | peak RSS MB | uncompressed MB | ratio | members | cells | longest line |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    with ParserPool(1, OFF) as pool:
        parse_one(pool, "warm.txt", b"Warm up the worker.")
        files = [(q, p) for p in paths for q in ([p] if p.is_file() else sorted(p.rglob("*")))]
        for path, root in ((q, p if p.is_dir() else p.parent) for q, p in files
                           if q.is_file() and q.name != "MANIFEST.tsv"):
            data = path.read_bytes()
            result, _ = parse_one(pool, path.name, data)
            outcome = "ok" if result.error is None else str(result.error.error_type)
            name, size, seconds, rss = str(path.relative_to(root)), len(data), result.seconds, result.peak_rss_mb or 0.0
            fig = static_figures(data, extension(path.name))
            rows.append((name, size, outcome, seconds, rss, fig))

            def cell(k, fmt, fig=fig):
                return format(fig[k], fmt) if k in fig else ""
            print(f"| {name} | {size / 1024:,.0f} | {outcome} | {seconds:.2f} | {result.cpu_seconds or 0:.2f} | {rss:,.0f}"
                  f" | {cell('uncompressed_mb', '.2f')}"
                  f" | {cell('ratio', '.1f')} | {cell('members', 'd')} | {cell('cells', ',d')} | {cell('line', ',d')} |",
                  flush=True)
    seconds = sorted(r[3] for r in rows)
    rss = sorted(r[4] for r in rows)
    print(f"\n{len(rows)} documents; parse seconds median {statistics.median(seconds):.2f}, p90 "
          f"{seconds[int(0.9 * (len(seconds) - 1))]:.2f}, max {seconds[-1]:.2f} ({max(rows, key=lambda r: r[3])[0]});"
          f" peak RSS median {statistics.median(rss):,.0f} MB, max {rss[-1]:,.0f} MB ({max(rows, key=lambda r: r[4])[0]})")
    for k in ("uncompressed_mb", "ratio", "members", "cells", "line"):
        values = [(r[5][k], r[0]) for r in rows if k in r[5]]
        if values:
            print(f"max {k}: {max(values)[0]:,.2f} ({max(values)[1]})")


def curves() -> None:
    from quivr_pipelines_tests.core import hostile_files as hostile

    print("| file | size KB | outcome | parse s | CPU s | peak RSS MB |")
    print("|---|---:|---|---:|---:|---:|")
    with ParserPool(1, OFF) as pool:
        parse_one(pool, "warm.txt", b"Warm up the worker.")
        cases = [(f"xlsx {rows * 10:,} cells", "c.xlsx", lambda rows=rows: hostile.big_xlsx(rows, 10))
                 for rows in (2_000, 10_000, 20_000)]
        cases += [(f"csv {rows * 10:,} cells", "c.csv", lambda rows=rows: "\n".join(
            ",".join(str(r * 10 + c) for c in range(10)) for r in range(rows)).encode()) for rows in (10_000, 50_000)]
        cases += [(f"text, one line of {mb:g} MB", "l.txt", lambda mb=mb: hostile.single_line_text(mb))
                  for mb in (0.1, 1, 4)]
        for label, key, build in cases:
            data = build()
            result, _ = parse_one(pool, key, data)
            outcome = "ok" if result.error is None else str(result.error)
            print(f"| {label} | {len(data) / 1024:,.0f} | {outcome[:60]} | {result.seconds:.2f} | {result.cpu_seconds or 0:.2f}"
                  f" | {result.peak_rss_mb or 0:,.0f} |",
                  flush=True)


def hostile() -> None:
    from quivr_pipelines_tests.core import hostile_files as hostile

    files = [("zip-bomb DOCX (300 MB of XML)", "bomb.docx", hostile.zip_bomb_docx()),
             ("XLSX, 1M cells", "cells.xlsx", hostile.big_xlsx()),
             ("text, one 20 MB line", "line.txt", hostile.single_line_text())]
    runtime_only = ParseLimits(timeout_seconds=60, max_uncompressed_mb=1e6, max_compression_ratio=1e9, max_archive_members=10**9,
                               max_cells=10**12, max_line_characters=10**12)
    print("| file | size KB | limits | outcome | seconds to the verdict |")
    print("|---|---:|---|---|---:|")
    for name, limits in (("defaults", ParseLimits()), ("guards off: 60 s, 2048 MB", runtime_only)):
        with ParserPool(1, limits) as pool:
            parse_one(pool, "warm.txt", b"Warm up the worker.")
            for label, key, data in files:
                result, wall = parse_one(pool, key, data)
                outcome = "ok" if result.error is None else str(result.error)
                print(f"| {label} | {len(data) / 1024:,.0f} | {name} | {outcome} | {wall:.1f} |", flush=True)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "docs"
    if command == "docs":
        docs([Path(arg) for arg in sys.argv[2:]] or [Path("../shared/data/docs")])
    elif command == "curves":
        curves()
    else:
        hostile()
