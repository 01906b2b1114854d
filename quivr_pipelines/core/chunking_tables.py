"""Tables and spreadsheets chunked by rows, each chunk with the table's header row.

unstructured's `chunk_by_title` splits an oversized Table so that each piece's *HTML* fits the
chunk size as well as its text; HTML is several times longer than the text, so a sheet became
chunks of one to ten characters (a cell or two), and its header row was in none of them but the
first. Here a table is read from its `text_as_html` and written as lines, cells joined by " | ":

- leading rows with a single filled cell are the caption (kept in the first chunk);
- the first row with two or more filled cells is the header; after a run of empty rows a row of
  mostly words (not numbers) starts a new header (a sheet holding several tables one below the
  other);
- rows are packed up to the chunk size, every chunk starting with its header line;
- a table whose header line alone takes more than a third of a chunk (hundreds of columns) is
  written as records instead, "first column: label — column: value; ..." per row, split at cell
  boundaries, each piece repeating the row's label, so every value stands next to its column's name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CELL_SEPARATOR = " | "
WIDE_HEADER_SHARE = 3  # header line longer than max_characters / this: records instead of lines
_NUMBERISH = re.compile(r"^[\s\d.,%()+\-–−/:$€£¥]*$")


@dataclass
class TablePiece:
    text: str
    header: str | None = None  # the header line the piece starts with (None: none)


@dataclass
class _Block:
    caption: list[str] = field(default_factory=list)
    header_rows: list[list[str]] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)

    @property
    def header(self) -> list[str] | None:
        """One name per column: the header rows' cells joined (a two-level header)."""
        if not self.header_rows:
            return None
        width = max(len(row) for row in self.header_rows)
        return [" ".join(row[i] for row in self.header_rows if i < len(row) and row[i]) for i in range(width)]

    def without_empty_columns(self) -> _Block:
        table = [*self.header_rows, *self.rows]
        width = max((len(row) for row in table), default=0)
        keep = [i for i in range(width) if any(i < len(row) and row[i] for row in table)]
        if len(keep) == width:
            return self
        def pick(row):
            return [row[i] if i < len(row) else "" for i in keep]
        return _Block(self.caption, [pick(r) for r in self.header_rows], [pick(r) for r in self.rows])


def table_rows(html: str) -> list[list[str]]:
    """Rows of cell texts; an empty row is []. Trailing empty cells are dropped."""
    from lxml import html as lxml_html

    try:
        root = lxml_html.fragment_fromstring(html, create_parent="div")
    except Exception:  # noqa: BLE001 - no usable HTML: the caller falls back to the text
        return []
    rows = []
    for tr in root.iter("tr"):
        # pandas writes a newline inside a spreadsheet cell as the two characters "\\n"
        cells = [re.sub(r"\s+", " ", td.text_content().replace("\\n", " ")).strip()
                 for td in tr if td.tag in ("td", "th")]
        while cells and not cells[-1]:
            cells.pop()
        rows.append(cells if any(cells) else [])
    return rows


def _filled(row: list[str]) -> int:
    return sum(1 for cell in row if cell)


def _wordy(row: list[str]) -> bool:
    cells = [cell for cell in row if cell]
    return sum(1 for cell in cells if not _NUMBERISH.match(cell)) * 2 > len(cells)


MAX_HEADER_ROWS = 3


def _blocks(rows: list[list[str]]) -> list[_Block]:
    blocks: list[_Block] = []
    current = _Block()
    after_gap = True
    for row in rows:
        if not row:
            after_gap = True
            continue
        multi = _filled(row) >= 2
        single = " ".join(cell for cell in row if cell)
        if not current.header_rows:
            if multi:
                current.header_rows.append(row)
            else:
                current.caption.append(single)
        elif (not current.rows and multi and _wordy(row) and len(current.header_rows) < MAX_HEADER_ROWS
              and _filled(current.header_rows[-1]) * 2 < len(current.header_rows[-1])):
            # a header of two levels: a sparse row of merged cells above the column names
            current.header_rows.append(row)
        elif after_gap and current.rows and multi and _wordy(row):
            blocks.append(current)
            current = _Block(header_rows=[row])
        elif after_gap and current.rows and not multi:
            blocks.append(current)
            current = _Block(caption=[single])
        else:
            current.rows.append(row)
        after_gap = False
    if current.caption or current.header_rows:
        blocks.append(current)
    return [block.without_empty_columns() for block in blocks]


def _line(row: list[str]) -> str:
    return CELL_SEPARATOR.join(row)


def _split_text(text: str, size: int) -> list[str]:
    """At whitespace where possible; never longer than `size`."""
    pieces = []
    while len(text) > size:
        cut = text.rfind(" ", size // 2, size)
        cut = cut if cut > 0 else size
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    return [*pieces, text] if text else pieces


def _records(block: _Block, max_chars: int) -> list[TablePiece]:
    header = block.header or []
    named = bool(block.rows)
    texts: list[str] = []
    for row in block.rows or [header]:  # a table of its header row alone: that row
        label = row[0] if named and row else ""
        if label and header and header[0]:
            label = f"{header[0]}: {label}"
        cells = [f"{header[i] if i < len(header) and header[i] else f'column {i + 1}'}: {cell}"
                 for i, cell in enumerate(row) if cell and (i > 0 or not named)]
        lead = f"{label} — " if label and cells else label
        current = lead
        for cell in cells:
            for part in _split_text(cell, max_chars - len(lead) - 2):
                if current != lead and len(current) + 2 + len(part) > max_chars:
                    texts.append(current)
                    current = lead
                current += ("; " if current != lead else "") + part
        if current:
            texts.append(current)
    caption = "\n".join(block.caption)
    if caption and texts and len(caption) + 1 + len(texts[0]) <= max_chars:
        texts[0] = f"{caption}\n{texts[0]}"
    elif caption:
        texts.insert(0, caption)
    return [TablePiece(text) for text in texts]


def chunk_table(html: str | None, text: str, max_chars: int, soft_chars: int) -> list[TablePiece]:
    """The table's pieces, each at most `max_chars` (a single over-long cell aside, split at spaces)."""
    rows = table_rows(html) if html else []
    if not any(rows):
        return [TablePiece(piece) for piece in _split_text(text.strip(), max_chars)]
    pieces: list[TablePiece] = []
    for block in _blocks(rows):
        header_line = _line(block.header) if block.header else ""
        if len(header_line) * WIDE_HEADER_SHARE > max_chars:
            pieces.extend(_records(block, max_chars))
            continue
        lines = [*block.caption, header_line] if header_line else list(block.caption)
        current = "\n".join(lines)
        for row in block.rows:
            line = _line(row)
            if len(line) + len(header_line) + 1 > max_chars:  # one over-long row: as records
                if current and current != header_line:
                    pieces.append(TablePiece(current, header_line or None))
                pieces.extend(_records(_Block(header=block.header, rows=[row]), max_chars))
                current = header_line
                continue
            if current and (len(current) + 1 + len(line) > max_chars or len(current) > soft_chars):
                pieces.append(TablePiece(current, header_line or None))
                current = header_line
            current = f"{current}\n{line}" if current else line
        if current and (current != header_line or not pieces or not block.rows):
            pieces.append(TablePiece(current, header_line or None))
    return [piece for piece in pieces if piece.text.strip()]
