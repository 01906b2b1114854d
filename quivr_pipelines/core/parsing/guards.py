"""The limits a document is parsed under, and the cheap static guards checked before parsing.

Parsers have no budget of their own: a zip-bomb DOCX (850 KB holding 300 MB of XML) ran for more
than 9 minutes at 5.9 GB, a 1M-cell XLSX and a 20 MB single-line text held their runs 8-10
minutes at 2.5-2.8 GB. Two layers stop them:

- static guards, here, read only what is cheap: a ZIP package's central directory (declared
  sizes, no decompression: Python's zipfile, which every OOXML/ODF/EPUB reader here uses, stops
  a member at its declared size and fails its CRC, so a lying directory cannot get past them),
  the first bytes of each worksheet (its `<dimension>`), and line lengths of text-like files;
- the worker's budget (`timeout_seconds`, `memory_mb`), enforced by `workers.ParserPool` for
  whatever a guard cannot see (a PDF's compressed streams, a slow layout).

A document past a guard or the memory limit is `too_complex` (skipped: the file is legal but
beyond what we index), past the wall time `parse_timeout` (failed); the reason names the limit
and its setting. The defaults were measured on the reference documents (benchmarks/RESULTS.md,
"Bounded parsing"): each is several times the largest real value there.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass

from quivr_pipelines.core.errors import ErrorType, IngestionError

ZIP_PACKAGES = {".docx", ".pptx", ".xlsx", ".odt", ".epub"}
LINE_LIMITED = {".txt", ".text", ".log", ".md", ".markdown", ".rst", ".org", ".csv", ".tsv"}
CELL_COUNTED_TEXT = {".csv": b",", ".tsv": b"\t"}
# A member's compression ratio means something only once it is big: a 2 KB run of spaces
# compresses 100x and is harmless.
RATIO_MIN_MEMBER_BYTES = 1 << 20
# The JSON reader recurses once per nesting level: past ~980 levels (Python's recursion limit)
# it fails with a bare "Not a valid json". Not a setting: no configuration can lift it, and
# real JSON (API dumps, configs) nests tens of levels, not hundreds.
JSON_EXTENSIONS = {".json", ".ndjson"}
MAX_JSON_DEPTH = 512
JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
DIMENSION = re.compile(rb'<(?:\w+:)?dimension\s+ref="([A-Z]{1,3})?(\d+)?(?::([A-Z]{1,3})(\d+))?"')


@dataclass(frozen=True)
class ParseLimits:
    """Per-document limits; the settings `QUIVR_PARSE_*` (README, "Bounded parsing")."""

    timeout_seconds: float = 600.0
    memory_mb: int = 2048  # the worker's address space, its ~600 MB of loaded libraries included
    max_uncompressed_mb: float = 50.0
    max_compression_ratio: float = 100.0
    max_archive_members: int = 10_000
    max_cells: int = 200_000
    max_line_characters: int = 100_000


def check_static_limits(data: bytes, ext: str, limits: ParseLimits) -> None:
    """Raise `too_complex` when the document is past a static limit; read nothing expensive."""
    if ext in ZIP_PACKAGES:
        _check_package(data, ext, limits)
    elif ext in JSON_EXTENSIONS:
        _check_json_depth(data)
    elif ext in LINE_LIMITED:
        _check_lines(data, limits)
        if ext in CELL_COUNTED_TEXT:
            _check_delimited_cells(data, CELL_COUNTED_TEXT[ext], limits)


def json_depth(data: bytes) -> int:
    """The deepest nesting of brackets outside strings, without parsing (a vectorised scan)."""
    import numpy as np

    brackets = np.frombuffer(JSON_STRING.sub(b"", data), dtype=np.uint8)
    steps = np.zeros(len(brackets), dtype=np.int32)
    steps[(brackets == ord("[")) | (brackets == ord("{"))] = 1
    steps[(brackets == ord("]")) | (brackets == ord("}"))] = -1
    return int(np.cumsum(steps).max(initial=0))


def _check_json_depth(data: bytes) -> None:
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise IngestionError(ErrorType.TOO_COMPLEX, f"JSON nested {depth:,} levels deep; the JSON reader "
                             f"handles at most {MAX_JSON_DEPTH} levels (a fixed limit, not a setting)")


def too_complex(what: str, value: str, limit: str, setting: str) -> IngestionError:
    return IngestionError(ErrorType.TOO_COMPLEX, f"{what} {value}, over the limit of {limit} ({setting})")


def _check_package(data: bytes, ext: str, limits: ParseLimits) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        return  # not a ZIP: `detect` says so with the precise reason
    with archive:
        members = archive.infolist()
        if len(members) > limits.max_archive_members:
            raise too_complex(f"the {ext} package holds", f"{len(members):,} members",
                              f"{limits.max_archive_members:,}", "QUIVR_PARSE_MAX_ARCHIVE_MEMBERS")
        uncompressed = sum(m.file_size for m in members)
        if uncompressed > limits.max_uncompressed_mb * 1024 * 1024:
            raise too_complex(f"the {ext} package's uncompressed size", f"{uncompressed / 2**20:,.1f} MB",
                              f"{limits.max_uncompressed_mb:g} MB", "QUIVR_PARSE_MAX_UNCOMPRESSED_MB")
        compressed = sum(m.compress_size for m in members)
        ratios = [(uncompressed / max(1, compressed), "package")] if uncompressed >= RATIO_MIN_MEMBER_BYTES else []
        ratios += [(m.file_size / max(1, m.compress_size), m.filename) for m in members
                   if m.file_size >= RATIO_MIN_MEMBER_BYTES]
        if ratios:
            ratio, where = max(ratios)
            if ratio > limits.max_compression_ratio:
                subject = f"the {ext} package's" if where == "package" else f"member {where[:100]}'s"
                raise too_complex(f"{subject} compression ratio", f"{ratio:,.0f}:1",
                                  f"{limits.max_compression_ratio:g}:1", "QUIVR_PARSE_MAX_COMPRESSION_RATIO")
        if ext == ".xlsx":
            _check_sheet_cells(archive, members, limits)


def _check_sheet_cells(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], limits: ParseLimits) -> None:
    """The cells every worksheet declares in its `<dimension>` (the first bytes of its XML)."""
    total = 0
    for member in members:
        if not (member.filename.startswith("xl/worksheets/") and member.filename.endswith(".xml")):
            continue
        try:
            with archive.open(member) as sheet:
                head = sheet.read(4096)
        except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError):
            continue  # damaged or encrypted: `detect` reports it
        total += _dimension_cells(head)
        if total > limits.max_cells:
            raise too_complex("the workbook's worksheets declare", f"{total:,} cells",
                              f"{limits.max_cells:,}", "QUIVR_PARSE_MAX_CELLS")


def _column_number(letters: bytes) -> int:
    number = 0
    for letter in letters:  # bytes: ints, "A" = 65
        number = number * 26 + letter - 64
    return number


def _dimension_cells(head: bytes) -> int:
    match = DIMENSION.search(head)
    if match is None or not match.group(3):
        return 0  # no range declared (or a single cell): nothing to count cheaply
    first_column, first_row, last_column, last_row = match.groups()
    columns = _column_number(last_column) - _column_number(first_column or b"A") + 1
    rows = int(last_row) - int(first_row or 1) + 1
    return max(0, columns) * max(0, rows)


def longest_line(data: bytes) -> int:
    """In bytes (a UTF-16 file counts double: still bounded), at C speed: one pass of numpy over
    the newline positions, not a Python loop over millions of short lines."""
    import numpy as np

    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    if newlines.size == 0:
        return len(data)
    bounds = np.concatenate(([-1], newlines, [len(data)]))
    return int(np.diff(bounds).max()) - 1


def _check_lines(data: bytes, limits: ParseLimits) -> None:
    longest = longest_line(data)
    if longest > limits.max_line_characters:
        raise too_complex("a line of", f"{longest:,} characters", f"{limits.max_line_characters:,}",
                          "QUIVR_PARSE_MAX_LINE_CHARACTERS")


def _check_delimited_cells(data: bytes, delimiter: bytes, limits: ParseLimits) -> None:
    """A CSV/TSV's cells, counted as delimiters plus lines (quoted delimiters count too: an
    upper bound, at memchr speed)."""
    cells = data.count(delimiter) + data.count(b"\n") + 1
    if cells > limits.max_cells:
        raise too_complex("the table holds about", f"{cells:,} cells", f"{limits.max_cells:,}",
                          "QUIVR_PARSE_MAX_CELLS")
