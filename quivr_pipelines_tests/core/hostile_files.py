"""Hostile documents built on the fly (never committed): a zip-bomb DOCX, a huge XLSX, a
single-line text. Each is written streaming, so building one costs little memory; sizes are
parameters, so a test builds the smallest file its (small, configured) limit refuses."""

from __future__ import annotations

import io
import zipfile

DOCX_TYPES = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
              b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
              b'<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
              b'<Default Extension="xml" ContentType="application/xml"/>'
              b'<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
              b'officedocument.wordprocessingml.document.main+xml"/></Types>')
DOCX_RELS = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
             b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
             b'<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
             b'relationships/officeDocument" Target="word/document.xml"/></Relationships>')
W = b"http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def zip_bomb_docx(xml_megabytes: float = 300) -> bytes:
    """A valid DOCX whose document.xml is `xml_megabytes` of the same paragraph: ~850 KB at 300 MB."""
    paragraph = b"<w:p><w:r><w:t>All work and no play makes Jack a dull boy.</w:t></w:r></w:p>"
    block = paragraph * 2000
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", DOCX_TYPES)
        archive.writestr("_rels/.rels", DOCX_RELS)
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            member.write(b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="'
                         + W + b'"><w:body>')
            for _ in range(max(1, int(xml_megabytes * 1024 * 1024 / len(block)))):
                member.write(block)
            member.write(b"</w:body></w:document>")
    return buffer.getvalue()


XLSX_TYPES = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
              b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
              b'<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
              b'<Default Extension="xml" ContentType="application/xml"/>'
              b'<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-'
              b'officedocument.spreadsheetml.sheet.main+xml"/>'
              b'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-'
              b'officedocument.spreadsheetml.worksheet+xml"/></Types>')
XLSX_RELS = DOCX_RELS.replace(b"word/document.xml", b"xl/workbook.xml")
XLSX_WORKBOOK = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                 b'<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
                 b'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
                 b'<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>')
XLSX_WORKBOOK_RELS = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                      b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                      b'<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
                      b'relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>')


def column_name(index: int) -> str:
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(65 + rest) + name
    return name


def big_xlsx(rows: int = 100_000, columns: int = 10, dimension: bool = True) -> bytes:
    """A valid XLSX of rows x columns numeric cells (1M cells by default, a few MB), written as
    Excel does: a `<dimension>` first unless `dimension=False` (some writers leave it out)."""
    names = [column_name(c) for c in range(columns)]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", XLSX_TYPES)
        archive.writestr("_rels/.rels", XLSX_RELS)
        archive.writestr("xl/workbook.xml", XLSX_WORKBOOK)
        archive.writestr("xl/_rels/workbook.xml.rels", XLSX_WORKBOOK_RELS)
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as sheet:
            sheet.write(b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                        b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">')
            if dimension:
                sheet.write(f'<dimension ref="A1:{names[-1]}{rows}"/>'.encode())
            sheet.write(b"<sheetData>")
            for r in range(1, rows + 1):
                cells = "".join(f'<c r="{n}{r}"><v>{r * 7 + c}</v></c>' for c, n in enumerate(names))
                sheet.write(f'<row r="{r}">{cells}</row>'.encode())
            sheet.write(b"</sheetData></worksheet>")
    return buffer.getvalue()


def single_line_text(megabytes: float = 20) -> bytes:
    """Prose without a single line break: `megabytes` of it."""
    sentence = b"The river carries silt to the delta where the water slows down. "
    return sentence * max(1, int(megabytes * 1024 * 1024 / len(sentence)))
