"""Every file of ../shared/data/docs, ingested through Dagster on the embedded default.

Each file ends either with points whose text holds content from that file, or with a recorded
failure of the right type. The table below is the contract; a new file in the corpus must be
added to it (the test fails on an unknown file).
"""

import shutil

import pytest

from quivr_pipelines_tests.conftest import DOCS
from quivr_pipelines_tests.helpers import all_points, catalog_rows, ingest, normalise

INGESTED = {
    "2023-half-year-analyses-by-segment.xlsx": "Analyses by segment",
    "README.md": "Example Docs",
    "README.org": "Example Docs",
    "README.rst": "Example Docs",
    "book-war-and-peace-1225p.txt": "Well, Prince, so Genoa and Lucca",
    "contains-pictures.docx": "An inline picture in the header",
    "csv-with-long-lines.csv": "SpearmanCorrelationCoefficient",
    "docx-shapes.docx": "Paragraph with floating shape attached",
    "duplicate-paragraphs.docx": "This document contains duplicates",
    "eml/email-no-utf8-2014-03-17.111517.eml": "The password for your Google Account",
    "eml/fake-email-b64.eml": "This is a test email to use for unit tests",
    "eml/fake-email-utf-16-be.eml": "This is a test email to use for unit tests",
    "example-10k-1p.html": "TRANSITION REPORT PURSUANT TO SECTION",
    "example-steelJIS-datasheet-utf-16.html": "Japanese Steels and Alloys",
    "example-with-scripts.html": "Skip to main content",
    "factbook.xml": "Washington, DC",
    "fake-doc-emphasized-text.docx": "bold-italic",
    "fake-doc.rtf": "My first paragraph",
    "fake-email-attachment.msg": "Here's the attachments",
    "fake-html-pre.htm": "UNITING AND STRENGTHENING AMERICA",
    "fake-html-with-base64-image.html": "Test page",
    "fake-power-point-malformed.pptx": "Test Slide",
    "fake-power-point.pptx": "Adding a Bullet Slide",
    "fake-text-utf-16.txt": "This is a test document to use for unit tests",
    "fake-text.txt": "This is a test document to use for unit tests",
    "fake.odt": "Lorem ipsum dolor sit amet",
    "fake_table.docx": "Header Col 1",
    "handbook-872p.docx": None,  # content checked below: any non-trivial text
    "ideas-page.html": "Someone fed my essays",
    "language-docs/fr_olap.pdf": "Résumés et interrogations de logs",
    "norwich-city.txt": "Iwan Roberts",
    "page-breaks.docx": "First page",
    "pdf/DA-619p.pdf": None,
    "pdf/all-number-table.pdf": "200.01",
    "pdf/copy-protected.pdf": "Toolkit for Deep Learning Based",
    "pdf/embedded-images-tables.pdf": "Potentiodynamic polarization data",
    "pdf/emphasis-text.pdf": "Test bold",
    "pdf/fake-memo.pdf": "May 5, 2023",
    "pdf/header-test-doc.pdf": "I Am A Header",
    "pdf/invalid-pdf-structure-pdfminer-one-page.pdf": "White House",
    "pdf/layout-parser-paper-fast.pdf": "Deep Learning Based Document Image Analysis",
    "pdf/list-item-example.pdf": "Introduction to Product Dev",
    "pdf/multi-column.pdf": "Dense Passage Retrieval for Open-Domain",
    "pdf/pdf-with-ocr-text.pdf": "progress of the Foundation",
    "pdf/reliance.pdf": "Corporate Overview",
    "science-exploration-1p.pptx": "Sciences and Exploration Directorate",
    "simple-table.md": "Juicy Apples",
    "simple.json": "These are a few of my favorite things",
    "simple.ndjson": "These are a few of my favorite things",
    "stanley-cups.csv": "Stanley Cups",
    "stanley-cups.tsv": "Stanley Cups",
    "tables-with-incomplete-rows.docx": "Example of DOCX table",
    "tests-example.xls": "What is 2+2?",
    "vodafone.xlsx": "Financial performance",
    "winter-sports.epub": "Cover",
}

NOT_INGESTED = {
    "empty.txt": ("skipped", "empty", "zero-byte"),
    "eml/empty.eml": ("skipped", "no_text", "no readable body"),
    "empty.xlsx": ("skipped", "no_text", "spreadsheet is empty"),
    "picture.pptx": ("skipped", "no_text", "only images"),
    "pdf/table-multi-row-column-cells.pdf": ("skipped", "no_text", "no text layer"),
    "fake.doc": ("skipped", "unsupported_type", "LibreOffice"),
    "fake-power-point.ppt": ("skipped", "unsupported_type", "LibreOffice"),
    "simple.zip": ("skipped", "unsupported_type", "archives are not unpacked"),
    "img/DA-1p.png": ("skipped", "unsupported_type", "OCR"),
    "img/layout-parser-paper-fast.jpg": ("skipped", "unsupported_type", "OCR"),
    "password_protected.xlsx": ("failed", "encrypted", "password-protected"),
    "pdf/password.pdf": ("failed", "encrypted", "password"),
    "eml/fake-encrypted.eml": ("failed", "encrypted", "encrypted e-mail"),
    "fake-encrypted.msg": ("failed", "encrypted", "encrypted Outlook message"),
}


@pytest.mark.slow
def test_every_shared_document_is_ingested_or_refused_with_the_right_reason(settings_env):
    corpus = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*") if p.is_file() and p.name != "MANIFEST.tsv")
    unknown = set(corpus) - set(INGESTED) - set(NOT_INGESTED)
    assert not unknown, f"add these corpus files to the expectation table: {sorted(unknown)}"
    shutil.copytree(DOCS, settings_env.inbox_dir / "corpus", ignore=shutil.ignore_patterns("MANIFEST.tsv"))

    summary, _ = ingest(kbs=["corpus"])
    assert summary["runs_failed"] == 0
    assert summary["planned"]["new"] == len(corpus)

    rows = catalog_rows("corpus")
    points = all_points("corpus")
    problems = []
    for key, snippet in INGESTED.items():
        row = rows[key]
        if row["status"] != "ingested":
            problems.append(f"{key}: {row['status']} {row['error_type']} {row['failure_reason']}")
            continue
        texts = [normalise(p.payload["text"]) for p in points[key]]
        assert len(texts) == row["chunk_count"] > 0, key
        if snippet is None:
            assert sum(len(t) for t in texts) > 10_000, key
        elif not any(normalise(snippet) in t for t in texts):
            problems.append(f"{key}: no chunk contains {snippet!r}")
        payload = points[key][0].payload
        assert payload["kb"] == "corpus" and payload["document_key"] == key
        assert payload["version"] == row["etag"] and payload["embedding_model"] == row["embedding_model"]
    for key, (status, error_type, reason) in NOT_INGESTED.items():
        row = rows[key]
        if (row["status"], row["error_type"]) != (status, error_type) or reason not in row["failure_reason"]:
            problems.append(f"{key}: expected {status}/{error_type} ({reason}), got "
                            f"{row['status']}/{row['error_type']}: {row['failure_reason']}")
        assert points[key] == [], key
    assert not problems, "\n".join(problems)

    # Page numbers travel from the PDF to the payload.
    assert {p.payload["page_number"] for p in points["pdf/DA-619p.pdf"]} >= {1, 619}
