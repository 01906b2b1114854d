"""PDF robustness: a second reader per page, page coverage, warnings, and `corrupt` only for files
no reader opens. Files are built by `fidelity.pdf_files` (raw PDF objects), never copied."""

import json
import unicodedata

import dagster as dg
import pytest

from quivr_pipelines.core.catalog import repository
from quivr_pipelines.core.catalog.status import kb_health, problem_documents
from quivr_pipelines.core.errors import ErrorType, IngestionError
from quivr_pipelines.core.factory import open_database
from quivr_pipelines.core.parsing import parse_document
from quivr_pipelines.core.parsing import pdf as pdf_module
from quivr_pipelines.core.parsing.pdf_quality import assess
from quivr_pipelines.defs.ingestion.documents import ASSET_KEY, KB_CHECK
from quivr_pipelines.settings import get_settings
from quivr_pipelines_tests.fidelity import pdf_files
from quivr_pipelines_tests.helpers import ingest

SENTENCE = "The harbour pilot boards at the outer buoy."


def text_of(parsed) -> str:
    return " ".join(e.text for e in parsed.elements)


@pytest.mark.parametrize("text, plausible", [
    ("The river carries silt to the delta.", True),
    ("The practical diﬃculties of eﬃcient oﬃce work.", True),  # ligature code points are letters
    ("The practical di\x00culties of work.", False),
    ("Zejiang Shen (cid:0) and (cid:3) 0.93", False),
    ("A broken \ufffd character", False),
    ("i g n d a e h d e t a t o R", False),  # a rotated line cut into letters
    ("A N N U A L   R E P O R T", False),
    ("Totals 1 2 3 4 5 6 7 8 9 0 4 5", True),  # a table of digits is not letter-spaced text
    ("", False),
])
def test_plausibility_of_a_page_text(text, plausible):
    assert assess(text).plausible is plausible


def test_a_colour_space_pdfminer_cannot_resolve_no_longer_makes_the_file_corrupt():
    parsed = parse_document(pdf_files.broken_colour_space([SENTENCE]), "report.pdf")
    assert SENTENCE in text_of(parsed)
    assert (parsed.page_count, parsed.pages_with_text, parsed.unread_pages) == (1, 1, ())


def test_a_later_page_that_trips_pdfminer_keeps_the_pages_after_it():
    parsed = parse_document(pdf_files.broken_colour_space([SENTENCE], pages_before=1, pages_after=2), "r.pdf")
    text = text_of(parsed)
    assert SENTENCE in text and "Page 1 of the report" in text and "Page 4 of the report" in text
    assert {e.metadata.page_number for e in parsed.elements} == {1, 2, 3, 4}
    assert (parsed.page_count, parsed.pages_with_text, parsed.unread_pages) == (4, 4, ())


def test_a_ligature_behind_a_tounicode_entry_to_nul_keeps_its_letters():
    """pdfminer and pypdf both print NUL for the /ffi glyph the CMap maps to <0000>."""
    parsed = parse_document(pdf_files.ligature_behind_bogus_tounicode(
        "The practical difficulties of efficient office work."), "ligatures.pdf")
    text = text_of(parsed)
    assert "\x00" not in text
    assert "The practical difficulties of efficient office work." in unicodedata.normalize("NFKC", text)


def test_text_rotated_on_the_page_is_not_stored_as_single_letters():
    parsed = parse_document(pdf_files.rotated_page(["Rotated landscape table heading"]), "rotated.pdf")
    assert "Rotated landscape table heading" in text_of(parsed)


def test_letter_spaced_text_is_read_by_the_reader_that_keeps_the_words():
    parsed = parse_document(pdf_files.letter_spaced(["ANNUAL REPORT", "A normal sentence follows here."]),
                            "spaced.pdf")
    assert "ANNUAL REPORT" in text_of(parsed) and "A normal sentence follows here." in text_of(parsed)


def test_a_page_no_reader_can_read_is_counted_as_unread():
    parsed = parse_document(pdf_files.unmapped_cid_page([SENTENCE]), "mystery.pdf")
    assert SENTENCE in text_of(parsed) and "(cid:" not in text_of(parsed)
    assert (parsed.page_count, parsed.pages_with_text, parsed.unread_pages) == (2, 1, (2,))


def test_the_second_reader_runs_only_on_pages_that_need_it(monkeypatch):
    calls = []
    original = pdf_module._Pypdf.page_text

    def counted(self, index):
        calls.append(index)
        return original(self, index)

    monkeypatch.setattr(pdf_module._Pypdf, "page_text", counted)
    parse_document(pdf_files.simple_pdf([["A first clean page of text."], ["A second clean page."]]), "clean.pdf")
    assert calls == []
    parse_document(pdf_files.broken_colour_space([SENTENCE], pages_before=2, pages_after=2), "mixed.pdf")
    assert calls == [2]  # the third page, 0-based


def test_a_file_no_reader_opens_is_corrupt():
    with pytest.raises(IngestionError) as caught:
        parse_document(b"%PDF-1.4\n" + bytes(range(256)) * 8, "broken.pdf")
    assert caught.value.error_type == ErrorType.CORRUPT
    assert "pypdf" in caught.value.message  # both readers were tried


def test_unread_pages_are_a_warning_in_the_catalog_the_event_and_the_dagster_ui(settings_env, capfd):
    folder = settings_env.inbox_dir / "kb1"
    folder.mkdir(parents=True)
    (folder / "mystery.pdf").write_bytes(pdf_files.unmapped_cid_page([SENTENCE]))
    (folder / "clean.pdf").write_bytes(pdf_files.broken_colour_space([SENTENCE], pages_before=1))
    summary, instance = ingest()
    assert summary["runs_failed"] == 0

    db = open_database(get_settings())
    try:
        rows = repository.get_documents(db, "kb1")
        health = kb_health(db)["kb1"]
        problems = problem_documents(db, "kb1", 10)
        listed = repository.failures(db, "kb1")
    finally:
        db.close()
    mystery, clean = rows["mystery.pdf"], rows["clean.pdf"]
    assert mystery["status"] == "ingested" and mystery["chunk_count"] >= 1
    assert (mystery["page_count"], mystery["pages_with_text"], mystery["unread_pages"]) == (2, 1, 1)
    assert "1 of 2 pages could not be read" in mystery["warning"] and "(page 2)" in mystery["warning"]
    assert (clean["status"], clean["page_count"], clean["pages_with_text"], clean["unread_pages"],
            clean["warning"]) == ("ingested", 2, 2, 0, None)
    assert (health.ingested, health.warned, health.healthy) == (2, 1, False)
    assert [(p["object_key"], p["status"], p["error_type"]) for p in problems] == [
        ("mystery.pdf", "ingested", "unread_pages")]
    assert [p["object_key"] for p in listed] == ["mystery.pdf"]

    events = [json.loads(line) for line in capfd.readouterr().err.splitlines() if '"ingestion_warning"' in line]
    assert [(e["filename"], e["unread_pages"], e["pages_with_text"]) for e in events] == [("mystery.pdf", [2], 1)]

    materialization = instance.get_latest_materialization_event(ASSET_KEY).asset_materialization
    assert materialization.metadata["warned"].value == 1 and materialization.metadata["run_warned"].value == 1
    assert "| ingested | mystery.pdf | unread_pages | 1 of 2 pages" in materialization.metadata["problems"].value
    [run] = instance.get_runs(dg.RunsFilter(job_name="ingest_documents_job"), limit=1)
    checks = {r.event_log_entry.dagster_event.event_specific_data.check_name:
              r.event_log_entry.dagster_event.event_specific_data
              for r in instance.get_records_for_run(
                  run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records}
    assert checks[KB_CHECK].passed is False and checks[KB_CHECK].severity == dg.AssetCheckSeverity.WARN
