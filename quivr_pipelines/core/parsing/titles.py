"""A document's title and an e-mail's headers, for the chunks' contextual headers (core/chunking.py).

Where the title comes from, first found wins:
1. the format's own metadata: PDF /Title, the core properties of docx/pptx/xlsx (docProps/core.xml),
   ODF meta.xml, HTML <title>, an e-mail's Subject;
2. the first Title element among the document's first elements;
3. the file name made readable ("q3_sales-report.v2.pdf" -> "q3 sales report v2"), unless it
   is an identifier ("doc-00042", "MED-10", "IMG_0001", a UUID or hash, "scan (3)"): then no title.
Metadata titles that are known junk (a tool's placeholder, a file name, "untitled") are skipped:
a wrong title on every chunk is worse than the next source.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from html import unescape
from pathlib import PurePosixPath

TITLE_MAX_CHARACTERS = 300  # what is kept; the chunk header bounds it again (core/chunking.py)
FIRST_ELEMENTS_SEARCHED = 20  # a Title deeper than this is a section heading, not the document's
_JUNK_TITLE = re.compile(
    r"^(untitled\b.*|title|document\d*|slide \d+|presentation\d*|book\d*|sheet\d*|spreadsheet\d*"
    r"|(microsoft )?(word|powerpoint|excel)( document| presentation| worksheet)?|microsoft (word|powerpoint|excel)\b.*"
    r"|.*\.(docx?|pptx?|xlsx?|pdf|tex|dvi|rtf|odt|txt|indd|qxd|ps))$",
    re.IGNORECASE,
)
_HTML_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_OOXML = {".docx", ".pptx", ".xlsx"}


@dataclass(frozen=True)
class EmailHeaders:
    subject: str | None = None
    sender: str | None = None
    to: str | None = None
    date: str | None = None

    def lines(self) -> list[str]:
        named = (("Subject", self.subject), ("From", self.sender), ("To", self.to), ("Date", self.date))
        return [f"{name}: {value}" for name, value in named if value]

    def as_payload(self) -> dict[str, str]:
        return {k: v for k, v in (("subject", self.subject), ("from", self.sender), ("to", self.to),
                                  ("date", self.date)) if v}


def clean(text: str | None) -> str | None:
    text = re.sub(r"\s+", " ", unescape(text or "")).strip()
    return text[:TITLE_MAX_CHARACTERS] or None


def usable(title: str | None) -> str | None:
    title = clean(title)
    if not title or not re.search(r"\w{2,}", title) or _JUNK_TITLE.match(title):
        return None
    return title


def heading_like(text: str | None) -> str | None:
    """A Title element that reads like a heading: unstructured calls many a short line of plain
    text a Title; one ending like a sentence or longer than a heading is not the document's."""
    title = usable(text)
    if not title or len(title) > 150 or len(title.split()) > 20 or title[-1] in ".,;":
        return None
    return title


def email_headers(elements: list) -> EmailHeaders | None:
    """What unstructured's e-mail partitioners put in every element's metadata."""
    for element in elements[:1]:
        meta = element.metadata
        subject = clean(getattr(meta, "subject", None))
        sender = clean(", ".join(getattr(meta, "sent_from", None) or []))
        to = clean(", ".join(getattr(meta, "sent_to", None) or []))
        date = clean(getattr(meta, "last_modified", None))
        if subject or sender or to:
            return EmailHeaders(subject, sender, to, date)
    return None


def document_title(data: bytes, key: str, ext: str, elements: list,
                   email: EmailHeaders | None = None) -> str | None:
    title = usable(email.subject) if email else None
    title = title or _metadata_title(data, ext)
    if not title:
        for element in elements[:FIRST_ELEMENTS_SEARCHED]:
            if element.category == "Title" and (title := heading_like(element.text)):
                break
    return title or readable_file_name(key)


# A name of generic words and numbers says nothing about the content: on every chunk's header
# it would only add tokens (and, for ids like "MED-10", false matches) to every vector.
_GENERIC_NAME_WORDS = frozenset(
    ["doc", "docs", "document", "documents", "file", "files", "scan", "scans", "img", "image", "images", "pic", "photo", "page", "pages", "untitled", "copy", "final", "draft", "new", "version", "export", "download", "downloads", "attachment", "output", "tmp", "temp", "note", "notes", "part", "item", "record"])
_IDENTIFIER_NAME = re.compile(r"[A-Za-z]{0,5}[-_ .]?\d[\d\-_ .]*|[0-9a-fA-F\-]{12,}")


def readable_file_name(key: str) -> str | None:
    """The file name as words, or None when it is an identifier or only generic words."""
    stem = PurePosixPath(key).name
    stem = stem[: -len(PurePosixPath(stem).suffix)] if PurePosixPath(stem).suffix else stem
    if _IDENTIFIER_NAME.fullmatch(stem.strip()):
        return None
    words = re.sub(r"[_\-.+]+", " ", stem)
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", words)  # camelCase
    meaningful = [w for w in re.findall(r"[^\W\d_]{3,}", words) if w.casefold() not in _GENERIC_NAME_WORDS]
    return (clean(words) or None) if meaningful else None


def _metadata_title(data: bytes, ext: str) -> str | None:
    try:
        if ext == ".pdf":
            return usable(_pdf_title(data))
        if ext in _OOXML:
            return usable(_zip_xml_title(data, "docProps/core.xml"))
        if ext == ".odt":
            return usable(_zip_xml_title(data, "meta.xml"))
        if ext in (".html", ".htm"):
            from quivr_pipelines.core.parsing.text import decode_text

            match = _HTML_TITLE.search(decode_text(data).encode("utf-8")[:200_000])
            return usable(match.group(1).decode("utf-8", "replace")) if match else None
    except Exception:  # noqa: BLE001 - a title is a nicety: broken metadata means the next source
        return None
    return None


def _pdf_title(data: bytes) -> str | None:
    from pdfminer.pdfdocument import PDFDocument
    from pdfminer.pdfparser import PDFParser
    from pdfminer.pdftypes import resolve1
    from pdfminer.utils import decode_text

    document = PDFDocument(PDFParser(io.BytesIO(data)))
    for info in document.info:
        value = resolve1(info.get("Title"))
        if isinstance(value, bytes):
            return decode_text(value)
        if isinstance(value, str):
            return value
    return None


def _zip_xml_title(data: bytes, member: str) -> str | None:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        try:
            info = archive.getinfo(member)
        except KeyError:
            return None
        if info.file_size > 1_000_000:
            return None
        xml = archive.read(info)
    match = re.search(rb"<dc:title[^>]*>(.*?)</dc:title>", xml, re.DOTALL)
    return match.group(1).decode("utf-8", "replace") if match else None
