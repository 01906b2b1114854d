"""Parse a document's bytes into unstructured elements, offline, without OCR.

A registry keyed by file extension says what each format needs; what we cannot read gets a
precise reason (unsupported / encrypted / corrupt / empty / no text) instead of an exception.
PDFs are read with pdfminer.six (what unstructured's "fast" strategy uses) because
`unstructured[pdf]` drags in torch, CUDA wheels and OpenCV.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from quivr_pipelines.core.content_types import content_type_for
from quivr_pipelines.core.errors import ErrorType, IngestionError
from quivr_pipelines.core.parsing import detect, fidelity, guards, offline_nlp, titles
from quivr_pipelines.core.parsing.text import decode_text
from quivr_pipelines.core.parsing.titles import EmailHeaders

TEXT_EXTENSIONS = {".txt", ".text", ".log"}
MARKUP_EXTENSIONS = {".md", ".markdown", ".rst", ".org", ".html", ".htm", ".xml", ".json",
                     ".ndjson", ".csv", ".tsv"}
OFFICE_EXTENSIONS = {".docx", ".pptx", ".xlsx", ".xls", ".odt", ".epub", ".rtf"}
EMAIL_EXTENSIONS = {".eml", ".msg"}
JSON_EXTENSIONS = {".json", ".ndjson"}
SUPPORTED_EXTENSIONS = TEXT_EXTENSIONS | MARKUP_EXTENSIONS | OFFICE_EXTENSIONS | EMAIL_EXTENSIONS | {".pdf"}
UNSUPPORTED_REASONS = {
    ".doc": "legacy Word .doc needs LibreOffice (soffice), which is not installed; save it as .docx",
    ".ppt": "legacy PowerPoint .ppt needs LibreOffice (soffice), which is not installed; save it as .pptx",
    ".zip": "archives are not unpacked; upload the documents inside it instead",
    ".png": "images need OCR, which is disabled",
    ".jpg": "images need OCR, which is disabled",
    ".jpeg": "images need OCR, which is disabled",
    ".tif": "images need OCR, which is disabled",
    ".tiff": "images need OCR, which is disabled",
    ".gif": "images need OCR, which is disabled",
    ".heic": "images need OCR, which is disabled",
}


@dataclass
class ParsedDocument:
    elements: list
    page_count: int | None
    content_type: str | None
    # The chunks' context (core/chunking.py): the document's title (None when no source gives one, see
    # parsing/titles.py for where it comes from) and, for an e-mail, its headers.
    title: str | None = None
    email: EmailHeaders | None = None
    # PDFs only (None / () for other formats): pages with text of `page_count`, and the pages no
    # reader could read (the document is ingested with a warning), 1-based.
    pages_with_text: int | None = None
    unread_pages: tuple[int, ...] = ()


def extension(key: str) -> str:
    return PurePosixPath(key).suffix.lower()


def parse_document(data: bytes, key: str, content_type: str | None = None,
                   limits: guards.ParseLimits | None = None) -> ParsedDocument:
    """Parse under `limits`' static guards (the defaults when None); the time and memory limits are
    the worker's (`workers.ParserPool`)."""
    ext = extension(key)
    if not data:
        raise IngestionError(ErrorType.EMPTY, "zero-byte file")
    if ext in UNSUPPORTED_REASONS:
        raise IngestionError(ErrorType.UNSUPPORTED_TYPE,
                             f"unsupported file type {ext}: {UNSUPPORTED_REASONS[ext]}")
    if ext not in SUPPORTED_EXTENSIONS:
        shown = ext or "(no extension)"
        raise IngestionError(ErrorType.UNSUPPORTED_TYPE, f"unsupported file type {shown}; supported: "
                             + ", ".join(sorted(SUPPORTED_EXTENSIONS)))
    if ext in TEXT_EXTENSIONS | MARKUP_EXTENSIONS and not data.strip(b" \t\r\n\x00\xef\xbb\xbf\xff\xfe"):
        raise IngestionError(ErrorType.EMPTY, "file contains only whitespace")
    # Before `detect`: its ZIP check decompresses every member to verify the CRCs.
    guards.check_static_limits(data, ext, limits or guards.ParseLimits())
    detect.refuse_encrypted_or_corrupt(data, ext)
    offline_nlp.install()
    elements, page_count, coverage = _partition(data, ext)
    # On the parser's text: the fidelity layer removes the NUL bytes this check counts.
    text = "".join(e.text for e in [e for e in elements if (e.text or "").strip()][:200])
    if text.count("\x00") > len(text) // 10:
        raise IngestionError(ErrorType.CORRUPT,
                             "extracted text is binary garbage (NUL bytes); the encoding is unknown")
    elements = fidelity.clean_elements(elements, json_text=ext in JSON_EXTENSIONS)
    elements = [e for e in elements if e.text.strip()]
    if not elements:
        raise IngestionError(ErrorType.NO_TEXT, _no_text_reason(ext))
    if page_count is None:
        pages = [e.metadata.page_number for e in elements if e.metadata.page_number]
        page_count = max(pages) if pages else None
    email = titles.email_headers(elements) if ext in EMAIL_EXTENSIONS else None
    return ParsedDocument(elements=elements, page_count=page_count,
                          content_type=content_type_for(key) or content_type,
                          title=titles.document_title(data, key, ext, elements, email), email=email,
                          **coverage)


def _no_text_reason(ext: str) -> str:
    if ext == ".pdf":
        return "no extractable text: the PDF has no text layer (scanned or image-only; OCR is disabled)"
    if ext in (".pptx", ".docx", ".odt"):
        return f"no extractable text: the {ext} holds only images or shapes without text"
    if ext in (".xlsx", ".xls", ".csv", ".tsv"):
        return "no extractable text: the spreadsheet is empty"
    if ext in EMAIL_EXTENSIONS:
        return "no extractable text: the message has no readable body (encrypted or empty)"
    return "no extractable text"


# unstructured detects each document's language (langdetect) unless told not to; nothing here
# reads `metadata.languages`, and detection cost ~40% of parsing a small text document.
NO_LANGUAGE_DETECTION = [""]


def _partition(data: bytes, ext: str) -> tuple[list, int | None, dict]:
    """(elements, page count, the PDF coverage fields of `ParsedDocument`)."""
    from unstructured.partition.auto import partition

    if ext == ".pdf":
        from quivr_pipelines.core.parsing.pdf import partition_pdf_text

        pdf = partition_pdf_text(data)
        return pdf.elements, pdf.pages, {"pages_with_text": pdf.pages_with_text, "unread_pages": pdf.unread_pages}
    if ext in TEXT_EXTENSIONS:
        from unstructured.partition.text import partition_text

        return partition_text(text=decode_text(data), languages=NO_LANGUAGE_DETECTION), None, {}
    options = {}
    if ext == ".eml":
        data = detect.normalise_email_bytes(data)
    elif ext in MARKUP_EXTENSIONS:
        # Our decoder, not unstructured's guess: the partitioner reads UTF-8 without a BOM, and
        # `encoding` overrides a declaration (an XML prolog) that no longer describes the bytes.
        data = decode_text(data).encode("utf-8")
        options["encoding"] = "utf-8"
    elif ext in (".xlsx", ".xls"):
        # One Table per sheet, every row in its HTML: sub-table detection cut header rows from
        # their data and made each lone cell an element (the 1-10 character chunks); the chunker
        # splits tables by rows (core/chunking_tables.py).
        options["find_subtable"] = False
    with tempfile.TemporaryDirectory(prefix="quivr-parse-") as tmp:
        # A fixed, safe local name: the object key never becomes a path on this machine.
        path = Path(tmp) / f"document{ext}"
        path.write_bytes(data)
        try:
            return partition(filename=str(path), strategy="fast", languages=NO_LANGUAGE_DETECTION,
                             **options), None, {}
        except Exception as exc:  # classified below
            raise detect.classify_parser_error(exc, ext) from exc
