"""PDF text extraction: pdfminer.six page by page, pypdf for the pages pdfminer gets wrong.

pdfminer.six is what unstructured's "fast" strategy uses (without its [pdf] extra, which installs
torch, CUDA wheels, OpenCV and cloud OCR clients): each text box becomes an element through
unstructured's own classifier, with its page number, so `chunk_by_title` treats PDFs like any
other format.

pdfminer alone lost text in ways a second reader does not:

- an exception on one object (an ICCBased colour space naming a missing stream) failed the whole
  file, and one on a later page dropped every page after it while the document was still
  recorded as ingested. Pages are now driven one at a time: a page that raises is read by pypdf
  (`PdfReader.pages[i].extract_text()`), and a page tree that breaks hands the remaining pages
  to pypdf;
- a page whose text is empty or implausible (`pdf_quality`: NUL, `(cid:NN)`, U+FFFD, runs of
  single letters from rotated or letter-spaced text) is read by pypdf too, and the more
  plausible of the two texts is kept. pypdf runs only on those pages: on clean files it costs
  nothing;
- fonts whose ToUnicode CMap maps a code to U+0000 while their /Encoding /Differences names the
  glyph (macOS writers do this for ligatures: code 0x21 named /ffi, mapped to <0000>) printed a
  NUL instead of "ffi", in pdfminer and pypdf alike. Such entries are dropped when the font is
  loaded, so pdfminer falls back to the glyph name, as pdftotext does.

Coverage: `PdfText.pages_with_text` of `pages`, and `unread_pages`, the pages on which a reader
failed (or produced only placeholders) and no reader recovered text: the pipeline records the
document as ingested with a warning. A page both readers read as empty is a blank or image-only
page: it lowers the coverage figure but is not "unread". CORRUPT is for files no reader opens.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from quivr_pipelines.core.errors import ErrorType, IngestionError
from quivr_pipelines.core.parsing.pdf_quality import PageQuality, assess

log = logging.getLogger(__name__)


@dataclass
class PdfText:
    elements: list
    pages: int
    pages_with_text: int
    unread_pages: tuple[int, ...] = ()  # 1-based
    second_reader_pages: tuple[int, ...] = ()  # pages whose text is pypdf's
    problems: dict[int, str] = field(default_factory=dict)  # page -> why it is unread


@dataclass
class _Page:
    boxes: list[str] | None = None  # pdfminer's text boxes; None when it raised
    error: str | None = None


def _text_boxes(container):
    from pdfminer.layout import LTFigure, LTTextContainer

    for item in container:
        if isinstance(item, LTTextContainer):
            yield item
        elif isinstance(item, LTFigure):  # text drawn inside form XObjects
            yield from _text_boxes(item)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _resource_manager():
    from pdfminer.pdffont import PDFSimpleFont
    from pdfminer.pdfinterp import PDFResourceManager

    class RepairingResourceManager(PDFResourceManager):
        """Fonts as pdfminer loads them, minus ToUnicode entries that map a code to a control
        character (U+0000 above all) when the font's encoding names that glyph."""

        def get_font(self, objid, spec):
            font = super().get_font(objid, spec)
            unicode_map = getattr(font, "unicode_map", None)
            if isinstance(font, PDFSimpleFont) and unicode_map is not None and not getattr(font, "_repaired", False):
                mapping = getattr(unicode_map, "cid2unichr", {})
                for cid, text in list(mapping.items()):
                    named = font.cid2unicode.get(cid)
                    if text and all(ord(ch) < 0x20 for ch in text) and named and named.isprintable():
                        del mapping[cid]  # `to_unichr` now answers with the glyph name's character
                font._repaired = True
            return font

    return RepairingResourceManager(caching=True)


class _Miner:
    """pdfminer, one page at a time: an exception costs its page, not the document."""

    def __init__(self, data: bytes):
        from pdfminer.converter import PDFPageAggregator
        from pdfminer.layout import LAParams
        from pdfminer.pdfdocument import PDFDocument
        from pdfminer.pdfinterp import PDFPageInterpreter
        from pdfminer.pdfparser import PDFParser

        self.document = PDFDocument(PDFParser(io.BytesIO(data)), password="")
        manager = _resource_manager()
        self.device = PDFPageAggregator(manager, laparams=LAParams(all_texts=True))
        self.interpreter = PDFPageInterpreter(manager, self.device)
        self.tree_error: str | None = None  # the page tree broke: later pages are unknown to pdfminer

    def pages(self) -> Iterator[_Page]:
        from pdfminer.pdfpage import PDFPage

        pages = PDFPage.create_pages(self.document)
        while True:
            try:
                page = next(pages)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - a broken page tree ends pdfminer's part
                self.tree_error = _describe(exc)
                return
            try:
                self.interpreter.process_page(page)
                layout = self.device.get_result()
                yield _Page(boxes=[box.get_text() for box in _text_boxes(layout)])
            except Exception as exc:  # noqa: BLE001 - pdfminer raises many types on damaged objects
                yield _Page(error=_describe(exc))


class _Pypdf:
    """pypdf, opened on first use: most files never need it."""

    def __init__(self, data: bytes):
        self.data = data
        self._reader = None
        self.open_error: str | None = None
        self._opened = False

    @property
    def reader(self):
        if not self._opened:
            self._opened = True
            try:
                from pypdf import PdfReader

                reader = PdfReader(io.BytesIO(self.data), strict=False)
                if reader.is_encrypted:
                    reader.decrypt("")
                len(reader.pages)  # walks the page tree: fails here, not later
                self._reader = reader
            except Exception as exc:  # noqa: BLE001 - pypdf is the second opinion, never the verdict
                self.open_error = _describe(exc)
        return self._reader

    def page_count(self) -> int | None:
        return len(self.reader.pages) if self.reader is not None else None

    def page_text(self, index: int) -> tuple[str | None, str | None]:
        """(text, error) of the 0-based page."""
        if self.reader is None:
            return None, f"pypdf cannot open the file ({self.open_error})"
        try:
            return self.reader.pages[index].extract_text() or "", None
        except Exception as exc:  # noqa: BLE001 - this page only
            return None, _describe(exc)


def _clean(text: str) -> str:
    from unstructured.cleaners.core import clean_extra_whitespace

    return clean_extra_whitespace(text.replace("-\n", "").replace("\n", " "))


def _blocks(text: str) -> list[str]:
    """pypdf's page text as paragraphs (blank lines separate them), like pdfminer's boxes."""
    return [block for block in re.split(r"\n\s*\n", text) if block.strip()]


def _elements(blocks: list[str], page_number: int) -> list:
    from unstructured.documents.elements import ElementMetadata
    from unstructured.partition.text import element_from_text

    elements = []
    for block in blocks:
        text = _clean(block)
        if not text:
            continue
        element = element_from_text(text)
        element.metadata = ElementMetadata(filetype="application/pdf", page_number=page_number)
        elements.append(element)
    return elements


def _open_miner(data: bytes) -> tuple[_Miner | None, str | None]:
    from pdfminer.pdfdocument import PDFEncryptionError, PDFPasswordIncorrect

    try:
        return _Miner(data), None
    except (PDFPasswordIncorrect, PDFEncryptionError) as exc:
        raise IngestionError(ErrorType.ENCRYPTED,
                             "password-protected PDF (a user password is required to open it)") from exc
    except Exception as exc:  # noqa: BLE001 - pypdf may still open it
        return None, _describe(exc)


def _choose(number: int, mined: _Page | None, second: _Pypdf) -> tuple[list[str], bool, str | None]:
    """(blocks, from the second reader, why unread) for one page."""
    miner_text = "\n".join(mined.boxes) if mined is not None and mined.boxes is not None else None
    quality = assess(miner_text) if miner_text is not None else None
    if quality is not None and quality.plausible:
        return mined.boxes, False, None
    text, error = second.page_text(number - 1)
    other = assess(text) if text is not None else None
    candidates: list[tuple[PageQuality, list[str], bool]] = []
    if quality is not None:
        candidates.append((quality, mined.boxes, False))
    if other is not None:
        candidates.append((other, _blocks(text), True))
    # pdfminer on a tie: its boxes carry the layout.
    best = max(candidates, key=lambda c: (c[0].score, not c[2]), default=None)
    if best is not None and best[0].readable:
        return best[1], best[2], None
    failures = []
    if mined is None:
        failures.append("pdfminer did not reach this page")
    elif mined.error:
        failures.append(f"pdfminer: {mined.error}")
    if error:
        failures.append(f"pypdf: {error}")
    garbage = [q for q, _, _ in candidates if not q.empty]
    if garbage:
        failures.append("only unreadable text: " + "; ".join(garbage[0].problems()))
    # Empty in every reader that read it, nobody failed: a blank or image-only page.
    return [], False, "; ".join(failures) or None


def partition_pdf_text(data: bytes) -> PdfText:
    miner, miner_error = _open_miner(data)
    second = _Pypdf(data)
    mined = list(miner.pages()) if miner is not None else []
    complete = miner is not None and miner.tree_error is None
    needs_second = not complete or any(p.boxes is None or not assess("\n".join(p.boxes)).plausible for p in mined)
    pages = len(mined)
    if needs_second and second.page_count() is not None:
        pages = max(pages, second.page_count())
    if miner is None and second.reader is None:
        raise IngestionError(ErrorType.CORRUPT, f"damaged PDF: neither pdfminer ({miner_error}) nor pypdf"
                                                f" ({second.open_error}) can open it"[:500])
    if pages == 0:
        raise IngestionError(ErrorType.CORRUPT, "damaged or truncated PDF: no readable page")
    elements, with_text, unread, fallback, problems = [], 0, [], [], {}
    for number in range(1, pages + 1):
        blocks, from_second, problem = _choose(number, mined[number - 1] if number <= len(mined) else None, second)
        page_elements = _elements(blocks, number)
        elements += page_elements
        with_text += bool(page_elements)
        if from_second and page_elements:
            fallback.append(number)
        if problem and not page_elements:
            unread.append(number)
            problems[number] = problem[:300]
    if not elements and unread:
        first = problems[unread[0]]
        raise IngestionError(ErrorType.CORRUPT, f"damaged PDF: no page could be read (page {unread[0]}: {first})"[:500])
    if fallback or unread:
        log.info("pdf: %d pages, %d with text, second reader on %s, unread %s", pages, with_text, fallback, unread)
    return PdfText(elements=elements, pages=pages, pages_with_text=with_text, unread_pages=tuple(unread),
                   second_reader_pages=tuple(fallback), problems=problems)
