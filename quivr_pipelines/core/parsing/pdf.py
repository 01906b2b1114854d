"""PDF text extraction with pdfminer.six, classified into unstructured elements.

This is what unstructured's "fast" strategy does, without its [pdf] extra (which installs
torch, CUDA wheels, OpenCV and cloud OCR clients). Each text box becomes an element through
unstructured's own classifier, with its page number, so `chunk_by_title` treats PDFs like any
other format.
"""

from __future__ import annotations

import io

from quivr_pipelines.core.errors import ErrorType, IngestionError


def _text_boxes(container):
    from pdfminer.layout import LTFigure, LTTextContainer

    for item in container:
        if isinstance(item, LTTextContainer):
            yield item
        elif isinstance(item, LTFigure):  # text drawn inside form XObjects
            yield from _text_boxes(item)


def partition_pdf_text(data: bytes) -> tuple[list, int]:
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LAParams
    from pdfminer.pdfdocument import PDFEncryptionError, PDFPasswordIncorrect
    from pdfminer.pdfparser import PDFSyntaxError
    from unstructured.cleaners.core import clean_extra_whitespace
    from unstructured.documents.elements import ElementMetadata
    from unstructured.partition.text import element_from_text

    elements, pages = [], 0
    try:
        for page_number, page in enumerate(extract_pages(io.BytesIO(data), laparams=LAParams(all_texts=True)),
                                           start=1):
            pages = page_number
            for box in _text_boxes(page):
                text = clean_extra_whitespace(box.get_text().replace("-\n", "").replace("\n", " "))
                if not text:
                    continue
                element = element_from_text(text)
                element.metadata = ElementMetadata(filetype="application/pdf", page_number=page_number)
                elements.append(element)
    except (PDFPasswordIncorrect, PDFEncryptionError) as exc:
        raise IngestionError(ErrorType.ENCRYPTED,
                             "password-protected PDF (a user password is required to open it)") from exc
    except PDFSyntaxError as exc:
        if not elements:
            raise IngestionError(ErrorType.CORRUPT, f"damaged or truncated PDF ({exc})") from exc
    except Exception as exc:  # pdfminer raises many types on damaged files
        if not elements:
            raise IngestionError(ErrorType.CORRUPT, f"damaged PDF ({type(exc).__name__}: {exc})"[:500]) from exc
    if pages == 0:
        raise IngestionError(ErrorType.CORRUPT, "damaged or truncated PDF: no readable page")
    return elements, pages
