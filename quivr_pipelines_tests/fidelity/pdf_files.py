"""A tiny raw-PDF writer for the PDF cases: objects, an exact xref, content streams.

Each builder writes one class of PDF that a reader once got wrong (a glyph-name ligature behind a
bogus ToUnicode entry, a rotated page, letter-spaced text, a ToUnicode font, a broken colour-space
reference, a later page that trips pdfminer). Nothing here comes from a real document.
"""

from __future__ import annotations

from dataclasses import dataclass, field

HELVETICA = "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"


def _escape(text: str) -> bytes:
    raw = text.encode("latin-1")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def text_ops(lines: list[str], font: str = "F1", size: int = 12, x: int = 72, y: int = 720,
             leading: int = 18) -> bytes:
    """BT ... ET drawing `lines` top-down with Tm/Tj (one Tm per line)."""
    ops = [b"BT", f"/{font} {size} Tf".encode()]
    for i, line in enumerate(lines):
        ops.append(f"1 0 0 1 {x} {y - i * leading} Tm".encode())
        ops.append(b"(" + _escape(line) + b") Tj")
    ops.append(b"ET")
    return b"\n".join(ops)


@dataclass
class Page:
    content: bytes
    fonts: dict[str, str] = field(default_factory=lambda: {"F1": HELVETICA})  # name -> object text or "n 0 R"
    extra_resources: str = ""  # e.g. BROKEN_COLOUR_SPACE
    rotate: int = 0
    content_extra: str = ""  # more entries of the content stream's dictionary ("/Filter /FlateDecode ")


class PdfWriter:
    """Objects numbered from 1; `build` writes header, objects, xref and trailer with exact offsets."""

    def __init__(self):
        self.objects: list[bytes] = []

    def add(self, body: str | bytes) -> int:
        self.objects.append(body.encode("latin-1") if isinstance(body, str) else body)
        return len(self.objects)

    def stream(self, data: bytes, extra: str = "") -> int:
        return self.add(f"<< /Length {len(data)} {extra}>>\nstream\n".encode() + data + b"\nendstream")

    def build(self, pages: list[Page]) -> bytes:
        pages_id = self.add("")  # filled in below, once the kids are known
        kids = []
        for page in pages:
            content = self.stream(page.content, page.content_extra)
            fonts = " ".join(f"/{name} {ref if ref.endswith(' R') else ref}" for name, ref in page.fonts.items())
            rotate = f" /Rotate {page.rotate}" if page.rotate else ""
            kids.append(self.add(
                f"<< /Type /Page /Parent {pages_id} 0 R /MediaBox [0 0 612 792]{rotate}"
                f" /Resources << /Font << {fonts} >> {page.extra_resources} >> /Contents {content} 0 R >>"))
        self.objects[pages_id - 1] = (f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}]"
                                      f" /Count {len(kids)} >>").encode()
        catalog = self.add(f"<< /Type /Catalog /Pages {pages_id} 0 R >>")
        out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        offsets = []
        for number, body in enumerate(self.objects, start=1):
            offsets.append(len(out))
            out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
        xref = len(out)
        out += f"xref\n0 {len(self.objects) + 1}\n0000000000 65535 f \n".encode()
        out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
        out += f"trailer\n<< /Size {len(self.objects) + 1} /Root {catalog} 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
        return bytes(out)


def simple_pdf(pages: list[list[str]]) -> bytes:
    """Helvetica text, one list of lines per page: a PDF every reader reads."""
    return PdfWriter().build([Page(text_ops(lines)) for lines in pages])


def to_unicode_cmap(mapping: dict[int, str]) -> bytes:
    """A ToUnicode CMap with one bfchar entry per one-byte code (UTF-16BE destinations)."""
    entries = "\n".join(f"<{code:02X}> <{text.encode('utf-16-be').hex().upper()}>" for code, text in mapping.items())
    return (
        "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
        "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
        "/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
        "1 begincodespacerange\n<00> <FF>\nendcodespacerange\n"
        f"{len(mapping)} beginbfchar\n{entries}\nendbfchar\n"
        "endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n"
    ).encode()


def ligature_behind_bogus_tounicode(sentence: str) -> bytes:
    """Every "ffi" of `sentence` drawn as one glyph: code 0x21, named /ffi by the font's
    /Differences, while the font's ToUnicode CMap maps 0x21 to U+0000 (what a real writer did:
    both pdfminer and pypdf then print a NUL where the letters were)."""
    writer = PdfWriter()
    cmap = writer.stream(to_unicode_cmap({0x21: "\x00"}))
    font = writer.add(f"<< /Type /Font /Subtype /Type1 /BaseFont /Times-Roman /Encoding << /Type /Encoding"
                      f" /Differences [33 /ffi] >> /ToUnicode {cmap} 0 R >>")
    drawn = sentence.replace("ffi", "!")
    return writer.build([Page(text_ops([drawn]), fonts={"F1": f"{font} 0 R"})])


def rotated_page(lines: list[str], rotate: int = 0) -> bytes:
    """Text running up the page (text matrix rotated by 90 degrees), as a landscape table is
    placed on a portrait page. Without a matching /Rotate (`rotate=0`) pdfminer's horizontal
    layout makes every letter a line of its own, in scrambled order."""
    ops = [b"BT", b"/F1 12 Tf"]
    for i, line in enumerate(lines):
        ops.append(f"0 1 -1 0 {100 + i * 18} 72 Tm".encode())
        ops.append(b"(" + _escape(line) + b") Tj")
    ops.append(b"ET")
    return PdfWriter().build([Page(b"\n".join(ops), rotate=rotate)])


def letter_spaced(lines: list[str], spacing: float = 6.0) -> bytes:
    """Every line drawn with character spacing (Tc), as display headings are."""
    ops = [b"BT", b"/F1 12 Tf", f"{spacing} Tc".encode()]
    for i, line in enumerate(lines):
        ops.append(f"1 0 0 1 72 {720 - i * 24} Tm".encode())
        ops.append(b"(" + _escape(line) + b") Tj")
    ops.append(b"ET")
    return PdfWriter().build([Page(b"\n".join(ops))])


def tounicode_font(lines: list[str]) -> bytes:
    """Text in a font whose codes mean nothing without its embedded ToUnicode CMap: each distinct
    character gets a code from 0x01 up, and the CMap maps the codes back."""
    alphabet = sorted({ch for line in lines for ch in line})
    codes = {ch: i + 1 for i, ch in enumerate(alphabet)}
    writer = PdfWriter()
    cmap = writer.stream(to_unicode_cmap({code: ch for ch, code in codes.items()}))
    differences = " ".join(f"{code} /g{code}" for code in codes.values())
    font = writer.add(f"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /FirstChar 1 /LastChar {len(codes)}"
                      f" /Encoding << /Type /Encoding /Differences [{differences}] >> /ToUnicode {cmap} 0 R >>")
    ops = [b"BT", b"/F1 12 Tf"]
    for i, line in enumerate(lines):
        ops.append(f"1 0 0 1 72 {720 - i * 18} Tm".encode())
        ops.append(b"<" + bytes(codes[ch] for ch in line).hex().encode() + b"> Tj")
    ops.append(b"ET")
    return writer.build([Page(b"\n".join(ops), fonts={"F1": f"{font} 0 R"})])


# pdfminer reads /N of the ICC stream while loading the page's resources; pypdf does not look at
# colour spaces to extract text.
BROKEN_COLOUR_SPACE = "/ColorSpace << /CS0 [/ICCBased 99 0 R] >>"


def broken_colour_space(lines: list[str], pages_before: int = 0, pages_after: int = 0) -> bytes:
    """A page of text whose resources hold an ICCBased colour space naming a missing object:
    pdfminer raises (PDFKeyError) loading the page's resources, pypdf reads the text. With
    `pages_before`/`pages_after` good pages around it: a later page that trips pdfminer."""
    def good(number: int) -> Page:
        return Page(text_ops([f"Page {number} of the report is fine."]))

    bad = Page(b"/CS0 cs 0 0 0 sc\n" + text_ops(lines), extra_resources=BROKEN_COLOUR_SPACE)
    pages = [good(i + 1) for i in range(pages_before)] + [bad]
    pages += [good(pages_before + 2 + i) for i in range(pages_after)]
    return PdfWriter().build(pages)


def unmapped_cid_page(lines_before: list[str]) -> bytes:
    """A page of plain text, then a page drawn in a Type0 (Identity-H) font with neither a
    ToUnicode CMap nor a known character collection: its two-byte codes mean nothing to any
    reader (pdfminer prints `(cid:NN)`), so that page is unread."""
    writer = PdfWriter()
    descendant = writer.add("<< /Type /Font /Subtype /CIDFontType2 /BaseFont /Mystery /CIDSystemInfo"
                            " << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> /DW 500 >>")
    font = writer.add(f"<< /Type /Font /Subtype /Type0 /BaseFont /Mystery /Encoding /Identity-H"
                      f" /DescendantFonts [{descendant} 0 R] >>")
    codes = b"BT /F2 12 Tf 1 0 0 1 72 700 Tm <0011002200330044005500660077> Tj ET"
    return writer.build([Page(text_ops(lines_before)), Page(codes, fonts={"F2": f"{font} 0 R"})])
