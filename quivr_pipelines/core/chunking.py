"""Title-aware chunking with unstructured's `chunk_by_title`, sizes from the KB's config."""

from __future__ import annotations

from dataclasses import dataclass

from quivr_pipelines.core.catalog.repository import KbConfig


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    page_number: int | None
    element_categories: list[str]
    section_title: str | None


def chunk_elements(elements: list, config: KbConfig) -> list[Chunk]:
    from unstructured.chunking.title import chunk_by_title

    if not elements:
        return []
    max_chars = config.chunk_max_characters
    composite = chunk_by_title(
        elements,
        max_characters=max_chars,
        new_after_n_chars=min(config.chunk_new_after_characters, max_chars),
        combine_text_under_n_chars=min(config.chunk_combine_under_characters, max_chars),
        overlap=min(config.chunk_overlap_characters, max_chars // 2),
        multipage_sections=True,
    )
    chunks = []
    section_title = None
    for element in composite:
        text = (element.text or "").strip()
        originals = getattr(element.metadata, "orig_elements", None) or [element]
        for original in originals:
            if original.category == "Title" and (original.text or "").strip():
                section_title = original.text.strip()[:300]
                break
        if not text:
            continue
        pages = [o.metadata.page_number for o in originals if o.metadata.page_number is not None]
        chunks.append(Chunk(
            index=len(chunks),
            text=text,
            page_number=min(pages) if pages else None,
            element_categories=sorted({o.category for o in originals}),
            section_title=section_title,
        ))
    return chunks
