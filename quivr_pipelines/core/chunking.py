"""Title-aware chunking with unstructured's `chunk_by_title`, sizes from the KB's config.

Three rules on top of `chunk_by_title` (README, "Chunking"):

- **A title is never a chunk of its own.** `chunk_by_title` emits a heading alone when the
  element after it does not fit beside it (a one-paragraph abstract longer than the chunk size:
  close to half of a corpus of abstracts had a title-only chunk). The element after a heading
  is cut at a sentence so that its first part fits beside the heading; a heading still alone
  (the last element of a document, or a heading longer than the chunk) joins its neighbour.
- **Tables are chunked by rows with their header** (core/chunking_tables.py), never by cells.
- **Chunks carry context**: `Chunk.context` is a short header, the document's title and the
  chunk's section heading, bounded by `CONTEXT_MAX_CHARACTERS`. `embed_text` (what the dense and
  sparse vectors are computed from) is the header and the text; `text` stays the plain chunk
  text that is shown. An e-mail's Subject, From, To and Date open its first chunk.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass

from quivr_pipelines.core.catalog.repository import KbConfig
from quivr_pipelines.core.chunking_tables import chunk_table
from quivr_pipelines.core.parsing.titles import heading_like

# The header costs embedding tokens on every chunk, and the local MiniLM embedder reads only its
# first 256 word pieces (~1,000 characters of English): 200 characters is ~40-50 word pieces.
CONTEXT_MAX_CHARACTERS = 200
CONTEXT_TITLE_MAX_CHARACTERS = 120  # the section heading gets the rest (at least 77)
CONTEXT_SEPARATOR = " › "
# A header part is left out when the chunk already says it in its first characters (the first
# chunk of a document usually starts with its title).
CONTEXT_ALREADY_STATED_WITHIN = 300
LEAD_CATEGORIES = frozenset({"Title", "EmailHeader"})  # what must never be a chunk alone
_SENTENCE_END = re.compile(r"[.!?;:](?=\s)|\n")


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str  # the plain text, shown to users (payload["text"])
    page_number: int | None
    element_categories: list[str]
    section_title: str | None
    document_title: str | None = None
    context: str = ""  # the contextual header; "" when there is nothing to add

    @property
    def embed_text(self) -> str:
        """What is embedded and indexed for BM25: the header, then the text."""
        return f"{self.context}\n\n{self.text}" if self.context else self.text


@dataclass
class _Draft:
    text: str
    originals: list
    is_table: bool = False
    sheet: str | None = None

    @property
    def lead_only(self) -> bool:
        return not self.is_table and all(o.category in LEAD_CATEGORIES for o in self.originals)


def chunk_document(parsed, config: KbConfig) -> list[Chunk]:
    """The chunks of a `ParsedDocument` (its elements, title and e-mail headers)."""
    return chunk_elements(parsed.elements, config, title=parsed.title, email=parsed.email)


def chunk_elements(elements: list, config: KbConfig, title: str | None = None, email=None) -> list[Chunk]:
    if not elements:
        return []
    max_chars = config.chunk_max_characters
    soft_chars = min(config.chunk_new_after_characters, max_chars)
    if email is not None and email.lines():
        elements = [*(_email_element(line, elements[0]) for line in email.lines()), *elements]
    drafts: list[_Draft] = []
    run: list = []
    for element in elements:
        if element.category != "Table":
            run.append(element)
            continue
        caption = []
        while run and run[-1].category in LEAD_CATEGORIES:  # the headings just above the table
            caption.insert(0, run.pop())
        drafts.extend(_text_drafts(run, config))
        drafts.extend(_table_drafts(element, caption, max_chars, soft_chars))
        run = []
    drafts.extend(_text_drafts(run, config))
    return _chunks(_merge_leads(drafts), title)


@functools.cache
def _email_header_class():
    from unstructured.documents.elements import Text

    return type("EmailHeader", (Text,), {"category": "EmailHeader"})


def _email_element(line: str, first):
    from unstructured.documents.elements import ElementMetadata

    return _email_header_class()(text=line,
                                 metadata=ElementMetadata(page_number=first.metadata.page_number))


def _text_drafts(run: list, config: KbConfig) -> list[_Draft]:
    from unstructured.chunking.title import chunk_by_title

    if not run:
        return []
    max_chars = config.chunk_max_characters
    composite = chunk_by_title(
        _fit_after_leads(run, max_chars),
        max_characters=max_chars,
        new_after_n_chars=min(config.chunk_new_after_characters, max_chars),
        combine_text_under_n_chars=min(config.chunk_combine_under_characters, max_chars),
        overlap=min(config.chunk_overlap_characters, max_chars // 2),
        multipage_sections=True,
    )
    drafts = []
    for element in composite:
        text = (element.text or "").strip()
        if text:
            drafts.append(_Draft(text, getattr(element.metadata, "orig_elements", None) or [element]))
    return drafts


def _fit_after_leads(run: list, max_chars: int) -> list:
    """Cut the element after a run of headings at a sentence, so its first part fits beside them."""
    out: list = []
    lead = 0  # characters of the headings just before, with their separators
    for element in run:
        text = element.text or ""
        if element.category in LEAD_CATEGORIES:
            lead += len(text) + 2
            out.append(element)
            continue
        room = max_chars - lead
        if lead and len(text) > room >= max_chars // 4:
            cut = _cut(text, room)
            out.extend([_with_text(element, text[:cut].rstrip()), _with_text(element, text[cut:].lstrip())])
        else:
            out.append(element)
        lead = 0
    return out


def _cut(text: str, room: int) -> int:
    ends = [m.end() for m in _SENTENCE_END.finditer(text, 0, room)]
    if ends and ends[-1] >= room // 3:
        return ends[-1]
    space = text.rfind(" ", 0, room)
    return space if space >= room // 3 else room


def _with_text(element, text: str):
    twin = copy.copy(element)
    twin.text = text
    twin.metadata = copy.deepcopy(element.metadata)
    return twin


def _table_drafts(table, caption: list, max_chars: int, soft_chars: int) -> list[_Draft]:
    pieces = chunk_table(getattr(table.metadata, "text_as_html", None), table.text or "", max_chars, soft_chars)
    sheet = getattr(table.metadata, "page_name", None)
    drafts = [_Draft(piece.text, [table], is_table=True, sheet=sheet) for piece in pieces]
    if caption:
        heading = "\n\n".join(e.text.strip() for e in caption)
        if drafts:
            drafts[0] = _Draft(f"{heading}\n\n{drafts[0].text}", [*caption, table], True, sheet)
        else:
            drafts.append(_Draft(heading, caption))
    return drafts


def _merge_leads(drafts: list[_Draft]) -> list[_Draft]:
    """A draft of headings only joins the next draft (or, at the end, the previous one)."""
    merged: list[_Draft] = []
    pending: _Draft | None = None
    for draft in drafts:
        if pending is not None:
            draft = _Draft(f"{pending.text}\n\n{draft.text}", [*pending.originals, *draft.originals],
                           draft.is_table, draft.sheet)
            pending = None
        if draft.lead_only:
            pending = draft
            continue
        merged.append(draft)
    if pending is not None:
        if merged:
            last = merged[-1]
            merged[-1] = _Draft(f"{last.text}\n\n{pending.text}", [*last.originals, *pending.originals],
                                last.is_table, last.sheet)
        else:
            merged.append(pending)  # a document that is only a heading
    return merged


def _chunks(drafts: list[_Draft], title: str | None) -> list[Chunk]:
    chunks = []
    section_title = None
    for draft in drafts:
        for original in draft.originals:
            if original.category == "Title" and (original.text or "").strip():
                section_title = original.text.strip()[:300]
                break
        section = section_title or draft.sheet
        pages = [o.metadata.page_number for o in draft.originals if o.metadata.page_number is not None]
        chunks.append(Chunk(
            index=len(chunks),
            text=draft.text,
            page_number=min(pages) if pages else None,
            element_categories=sorted({o.category for o in draft.originals}),
            section_title=section,
            document_title=title,
            context=context_header(title, section, draft.text),
        ))
    return chunks


def _bounded(text: str, limit: int) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", limit // 2, limit - 1)
    return text[:cut if cut > 0 else limit - 1].rstrip(" ,;:-") + "…"


def context_header(title: str | None, section: str | None, text: str) -> str:
    """"Title › Section", at most `CONTEXT_MAX_CHARACTERS`; a part the chunk's start already
    states, a section the title holds, or one that reads like a sentence, is left out."""
    opening = re.sub(r"\s+", " ", text[:CONTEXT_ALREADY_STATED_WITHIN]).casefold()
    title = re.sub(r"\s+", " ", title or "").strip()
    section = re.sub(r"\s+", " ", section or "").strip()
    if not heading_like(section) or section.casefold() in title.casefold():
        section = ""  # a sentence unstructured took for a Title, or what the title already says
    parts: list[str] = []
    for plain, limit in ((title, CONTEXT_TITLE_MAX_CHARACTERS), (section, None)):
        if not plain or plain.casefold() in opening:
            continue
        room = CONTEXT_MAX_CHARACTERS - sum(len(p) + len(CONTEXT_SEPARATOR) for p in parts)
        parts.append(_bounded(plain, min(limit or room, room)))
    return CONTEXT_SEPARATOR.join(parts)
