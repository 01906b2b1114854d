"""Chunks carry context (issue 10, item 3): a title is never a chunk of its own, tables are
chunked by rows with their header, an e-mail's headers open its first chunk, and the embedded
and BM25 text carries a bounded header (document title, section) that the payload text does not."""

import io
from dataclasses import replace
from email.message import EmailMessage

import pytest

from quivr_pipelines.core import sparse
from quivr_pipelines.core.catalog.database import Database
from quivr_pipelines.core.catalog.repository import KbConfig
from quivr_pipelines.core.chunking import CONTEXT_MAX_CHARACTERS, chunk_elements
from quivr_pipelines.core.objects import LocalFolderStore
from quivr_pipelines.core.parsing import parse_document
from quivr_pipelines.core.parsing.workers import ParserPool
from quivr_pipelines.core.pipeline import IngestionContext, ingest_documents

DEFAULT = KbConfig(name="", chunk_max_characters=1500, chunk_new_after_characters=1200,
                   chunk_combine_under_characters=200, chunk_overlap_characters=0)
SENTENCE = "Dietary fibre intake was associated with lower rates of colorectal cancer in the cohort. "


def config(max_chars: int) -> KbConfig:
    return replace(DEFAULT, chunk_max_characters=max_chars, chunk_new_after_characters=int(max_chars * 0.8),
                   chunk_combine_under_characters=min(200, max_chars // 4))


def chunks_of(data: bytes, key: str, kb: KbConfig = DEFAULT):
    parsed = parse_document(data, key)
    return parsed, chunk_elements(parsed.elements, kb, title=parsed.title, email=parsed.email)


def title_only(chunk) -> bool:
    return set(chunk.element_categories) <= {"Title"}


@pytest.mark.parametrize("max_chars", [300, 800, 1500])
@pytest.mark.parametrize("sentences", [1, 4, 17, 40])
def test_a_title_is_never_a_chunk_of_its_own(max_chars, sentences):
    title = "Fibre intake and colorectal cancer risk in a prospective cohort"
    markdown = f"# {title}\n\n{SENTENCE * sentences}\n\n## Methods\n\n{SENTENCE * sentences}\n\n## Trailing heading\n"
    _, chunks = chunks_of(markdown.encode(), "abstract.md", config(max_chars))
    assert not [c.text for c in chunks if title_only(c)]
    assert chunks[0].text.startswith(title)
    assert "Trailing heading" in chunks[-1].text
    assert all(len(c.text) <= max_chars for c in chunks[:-1])  # the trailing heading may overflow the last
    _, alone = chunks_of(b"# Only a heading\n", "heading.md")  # a document of a heading keeps it
    assert [c.text for c in alone] == ["Only a heading"]


def csv_table(rows: int) -> bytes:
    lines = ["Region,Product,Quarter,Revenue"]
    lines += [f"Region {i},Widget {i},Q{i % 4 + 1},{1000 + i}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def test_a_csv_is_chunked_by_rows_each_chunk_with_its_header():
    _, chunks = chunks_of(csv_table(200), "sales.csv", config(400))
    assert len(chunks) > 5
    header = "Region | Product | Quarter | Revenue"
    assert all(c.text.splitlines()[0] == header for c in chunks)
    rows = [line for c in chunks for line in c.text.splitlines()[1:]]
    assert rows == [f"Region {i} | Widget {i} | Q{i % 4 + 1} | {1000 + i}" for i in range(200)]
    assert min(len(c.text) for c in chunks) > 100
    assert all(len(c.text) <= 400 for c in chunks)


def test_a_very_wide_csv_keeps_each_value_beside_its_column_name():
    names = [f"marker{i}" for i in range(300)]
    data = ("label," + ",".join(names) + "\n" + "sample A," + ",".join(str(i) for i in range(300)) + "\n").encode()
    _, chunks = chunks_of(data, "wide.csv", config(500))
    assert all(c.text.startswith("wide") is False for c in chunks)  # the file name is context, not text
    assert all(c.text.startswith("label: sample A — ") and len(c.text) <= 500 for c in chunks)
    assert "marker217: 217" in "\n".join(c.text for c in chunks)


def xlsx_workbook() -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Staff directory"
    sheet.append(["Staff directory, head office"])
    sheet.append([])
    sheet.append(["Name", "Department", "Extension", "Room"])
    for i in range(80):
        sheet.append([f"Person {i}", f"Department {i % 7}", 4000 + i, f"B{i}"])
    second = book.create_sheet("Budget")
    second.append(["Item", "Amount"])
    second.append(["Pencils", 12])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_an_xlsx_is_chunked_by_rows_with_its_header_not_by_cells():
    _, chunks = chunks_of(xlsx_workbook(), "directory.xlsx", config(500))
    staff = [c for c in chunks if c.section_title == "Staff directory"]
    assert staff and all("Name | Department | Extension | Room" in c.text for c in staff)
    assert "Staff directory, head office" in staff[0].text
    assert "Person 42 | Department 0 | 4042 | B42" in "\n".join(c.text for c in staff)
    assert min(len(c.text) for c in chunks) >= 20  # no chunk of a cell or two
    budget = [c for c in chunks if c.section_title == "Budget"]
    assert [c.text for c in budget] == ["Item | Amount\nPencils | 12"]
    assert "Budget" in budget[0].context


def email_bytes(subject="Quarterly freight contract renewal") -> bytes:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = "Alice Martin <alice.martin@example.com>"
    message["To"] = "bob@example.org"
    message["Date"] = "Tue, 01 Dec 2026 09:30:00 +0000"
    message.set_content("Hello Bob,\n\nPlease find the figures attached.\n")
    return message.as_bytes()


def test_an_email_subject_from_to_and_date_open_its_first_chunk():
    parsed, chunks = chunks_of(email_bytes(), "mail.eml")
    assert parsed.title == "Quarterly freight contract renewal"
    first = chunks[0].text
    for expected in ("Subject: Quarterly freight contract renewal", "From: Alice Martin <alice.martin@example.com>",
                     "To: bob@example.org", "Date: 2026-12-01"):
        assert expected in first
    assert first.index("Subject:") < first.index("Please find the figures")
    assert parsed.email.as_payload()["from"] == "Alice Martin <alice.martin@example.com>"


def test_the_header_is_in_the_embedded_text_not_in_the_display_text():
    markdown = f"# Fibre and cancer\n\n{SENTENCE * 30}\n\n## Dose response\n\n{SENTENCE * 30}".encode()
    parsed, chunks = chunks_of(markdown, "fibre.md", config(600))
    later = [c for c in chunks if c.section_title == "Dose response" and not c.text.startswith("Dose response")]
    assert later
    for chunk in later:
        assert chunk.context == "Fibre and cancer › Dose response"
        assert chunk.embed_text == f"{chunk.context}\n\n{chunk.text}"
        assert "Fibre and cancer" not in chunk.text
    assert chunks[0].context == ""  # the first chunk already opens with the title


@pytest.mark.parametrize("key, title", [
    ("reports/q3_sales-report.v2.md", "q3 sales report v2"),
    ("notes/MeetingNotes.txt", "Meeting Notes"),
])
def test_without_a_title_the_file_name_made_readable_is_the_title(key, title):
    parsed = parse_document(b"just some lowercase text without any heading, a plain sentence here.", key)
    assert parsed.title == title


def test_the_html_title_element_is_the_document_title():
    parsed = parse_document(b"<html><head><title>Cold chain logistics</title></head><body><h1>Intro</h1>"
                            b"<p>Vaccines travel cold.</p></body></html>", "page.html")
    assert parsed.title == "Cold chain logistics"


def test_the_header_is_bounded():
    title = "A very long title " * 40
    markdown = f"# {title}\n\n{SENTENCE * 5}\n\n## {'section words ' * 40}\n\n{SENTENCE * 30}".encode()
    _, chunks = chunks_of(markdown, "long.md", config(500))
    assert any(c.context for c in chunks)
    assert all(len(c.context) <= CONTEXT_MAX_CHARACTERS for c in chunks)


# --- through the pipeline: payload, sparse vector, the switch, PII ------------------------------

@pytest.fixture
def ingestion(tmp_path, postgres_dsn, db_schema):
    from quivr_pipelines.core.embedding.local import LocalEmbedder
    from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore

    db = Database(postgres_dsn, schema=db_schema)
    vectors = EmbeddedStore(tmp_path / "qdrant")
    yield IngestionContext(store=LocalFolderStore(tmp_path / "inbox"), vectors=vectors,
                           embedder=LocalEmbedder.load(), db=db, defaults=config(600), max_bytes=10 << 20)
    vectors.close()
    db.close()


def points(ctx, kb, key):
    return sorted(ctx.vectors.document_points(ctx.vectors.resolve_alias(kb), kb, key),
                  key=lambda p: p.payload["chunk_index"])


def sparse_hits(ctx, kb, query):
    return ctx.vectors.search(ctx.vectors.resolve_alias(kb), None, sparse.query_vector(query), 50, mode="sparse")


def test_payload_keeps_plain_text_and_vectors_carry_the_header_unless_switched_off(ingestion):
    markdown = f"# Zyxcore lattice study\n\n{SENTENCE * 30}\n\n## Dose response\n\n{SENTENCE * 30}".encode()
    ingestion.store.put("on", "fibre.md", markdown)
    ingestion.store.put("off", "fibre.md", markdown)
    ingestion.store.put("on", "mail.eml", email_bytes())
    with ParserPool(workers=1) as parser:
        ingest_documents(replace(ingestion, parser=parser, context_headers=True), "on", ["fibre.md", "mail.eml"])
        ingest_documents(replace(ingestion, parser=parser, context_headers=False), "off", ["fibre.md"])
    on, off = points(ingestion, "on", "fibre.md"), points(ingestion, "off", "fibre.md")
    assert len(on) > 2
    assert [p.payload["text"] for p in on] == [p.payload["text"] for p in off]
    assert all(p.payload["document_title"] == "Zyxcore lattice study" for p in on)
    assert sum("Zyxcore" in p.payload["text"] for p in on) == 1  # the title is in the first chunk only
    # BM25 finds every chunk by the title's word with headers, only the first one without.
    found_on = {h.payload["chunk_index"] for h in sparse_hits(ingestion, "on", "zyxcore") if
                h.payload["document_key"] == "fibre.md"}
    found_off = {h.payload["chunk_index"] for h in sparse_hits(ingestion, "off", "zyxcore")}
    assert (found_on, found_off) == ({p.payload["chunk_index"] for p in on}, {0})
    mail = points(ingestion, "on", "mail.eml")
    assert mail[0].payload["email"]["subject"] == "Quarterly freight contract renewal"
    assert mail[0].payload["document_title"] == "Quarterly freight contract renewal"
    assert "Subject: Quarterly freight contract renewal" in mail[0].payload["text"]


def test_pii_masking_covers_the_title_header_and_email_fields(ingestion):
    ingestion = replace(ingestion, defaults=replace(config(600), pii="mask"), context_headers=True)
    ingestion.store.put("pii", "mail.eml", email_bytes(subject="Call John Smith at john.smith@example.com"))
    with ParserPool(workers=1) as parser:
        ingest_documents(replace(ingestion, parser=parser), "pii", ["mail.eml"])
    payloads = "\n".join(repr(p.payload) for p in points(ingestion, "pii", "mail.eml"))
    for original in ("john.smith@example.com", "alice.martin@example.com", "bob@example.org"):
        assert original not in payloads


def docx_bytes(core_title: str) -> bytes:
    from docx import Document

    document = Document()
    document.core_properties.title = core_title
    document.add_heading("Scope of the review", level=1)
    document.add_paragraph("Every crane on the quay was inspected twice in the year.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


@pytest.mark.parametrize("core_title, title", [
    ("Annual safety review", "Annual safety review"),  # the format's own title first
    ("Microsoft Word - draft3.docx", "Scope of the review"),  # a placeholder: the first heading
])
def test_the_docx_core_title_is_the_document_title_unless_it_is_a_placeholder(core_title, title):
    assert parse_document(docx_bytes(core_title), "review.docx").title == title


@pytest.mark.parametrize(("key", "title"), [
    ("q3_sales-report.v2.pdf", "q3 sales report v2"),
    ("reports/employee-handbook.docx", "employee handbook"),
    ("Annual Report 2023.pdf", "Annual Report 2023"),
    ("doc-00005.txt", None),  # identifiers and generic names: no title, not one on every chunk
    ("MED-10.md", None),
    ("IMG_0001.pdf", None),
    ("c9bf9e57-1685-4c89-bafb-ff5af830be8a.pdf", None),
    ("scan (3).pdf", None),
    ("document.docx", None),
])
def test_a_file_name_is_a_title_only_when_it_says_something(key, title):
    from quivr_pipelines.core.parsing.titles import readable_file_name

    assert readable_file_name(key) == title


def test_an_identifier_file_name_adds_no_header():
    from quivr_pipelines.core.chunking import chunk_document

    parsed = parse_document(b"Note 5. The Broncos defeated the Steelers in the divisional round.\n", "doc-00005.txt")
    assert parsed.title is None
    chunks = chunk_document(parsed, DEFAULT)
    assert [c.context for c in chunks] == [""] and chunks[0].embed_text == chunks[0].text
