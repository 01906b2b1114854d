"""PII modes through the real pipeline (Dagster runs, embedded Qdrant engine, real PostgreSQL):
`mask` leaves no original entity in the vector store, the catalog, the logs or Dagster's events;
`detect` counts without changing the text; changing a KB's mode re-ingests it at the next sync."""

import json
from pathlib import Path

import psycopg
from typer.testing import CliRunner

from quivr_pipelines.cli import app
from quivr_pipelines_tests.helpers import all_points, catalog_rows, ingest

DOCUMENT = """Customer record

John Smith can be reached at john.smith@example.com or on +44 20 7946 0958.

He paid with card 4111 1111 1111 1111 and his IBAN is GB82 WEST 1234 5698 7654 32.
"""
ORIGINALS = ["John Smith", "john.smith@example.com", "7946 0958", "4111 1111 1111 1111", "GB82 WEST"]
FOUND = {"CREDIT_CARD": 1, "EMAIL_ADDRESS": 1, "IBAN_CODE": 1, "PERSON": 1, "PHONE_NUMBER": 1}


def seed(settings, kb="kb1"):
    root = settings.inbox_dir / kb
    root.mkdir(parents=True, exist_ok=True)
    (root / "customer.txt").write_text(DOCUMENT)
    (root / "plain.txt").write_text("Norwich City is a football club.\n\nIt plays at Carrow Road.\n")


def texts(kb="kb1") -> dict[str, str]:
    return {key: "\n".join(p.payload["text"] for p in points) for key, points in all_points(kb).items()}


def catalog_dump(settings) -> str:
    """Every row of every table of the test's catalog schema, as JSON text."""
    dsn = settings.database_url.get_secret_value()
    with psycopg.connect(dsn) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (settings.database_schema,))]
        return "\n".join(json.dumps(row[0], default=str) for table in tables for row in conn.execute(
            f'SELECT row_to_json(t) FROM "{settings.database_schema}"."{table}" t'))


def dagster_events(instance) -> str:
    """Every event of every run (log messages, materializations and their metadata)."""
    runs = instance.get_runs()
    assert runs
    return "\n".join(str(entry) for run in runs for entry in instance.all_logs(run.run_id))


def vector_store_files(settings) -> str:
    return "\n".join(path.read_bytes().decode("utf-8", "replace")
                     for path in Path(settings.qdrant_dir).rglob("*") if path.is_file())


def leaks(text: str) -> list[str]:
    return [s for s in ORIGINALS if s in text]


def test_mask_from_the_start_leaves_no_original_entity_anywhere(settings_env, monkeypatch, capfd):
    monkeypatch.setenv("QUIVR_PII", "mask")  # the default of a KB created from now on
    seed(settings_env)
    summary, instance = ingest()
    assert summary["runs_failed"] == 0
    out, err = capfd.readouterr()

    stored = texts()
    assert stored["customer.txt"].count("<EMAIL_ADDRESS>") == 1 and "<CREDIT_CARD>" in stored["customer.txt"]
    assert stored["plain.txt"] == "Norwich City is a football club.\n\nIt plays at Carrow Road."
    [point] = all_points("kb1")["customer.txt"]
    assert point.payload["pii_entities"] == FOUND
    rows = catalog_rows("kb1")
    assert rows["customer.txt"]["pii_mode"] == "mask" and rows["customer.txt"]["pii_entities"] == FOUND
    assert rows["plain.txt"]["pii_entities"] == {}

    payloads = json.dumps([p.payload for points in all_points("kb1").values() for p in points])
    on_disk = vector_store_files(settings_env)
    for where, text in {"payloads": payloads, "vector store files": on_disk, "catalog": catalog_dump(settings_env),
                        "Dagster events": dagster_events(instance), "logs": out + err}.items():
        assert leaks(text) == [], where
    assert "john.smith@example.com" in DOCUMENT  # the test would see the strings if they were there
    assert ORIGINALS[0] in (settings_env.inbox_dir / "kb1" / "customer.txt").read_text()  # the source is untouched


def test_a_new_pii_mode_reingests_the_kb_at_the_next_sync(settings_env):
    seed(settings_env)
    _, instance = ingest()
    assert leaks(texts()["customer.txt"]) == ORIGINALS  # off: the text as written
    assert leaks(vector_store_files(settings_env)) == ORIGINALS  # (the engine's files hold payloads as text)
    assert "pii_entities" not in all_points("kb1")["customer.txt"][0].payload
    assert catalog_rows("kb1")["customer.txt"]["pii_entities"] is None

    cli = CliRunner()
    result = cli.invoke(app, ["kb", "set", "kb1", "--pii", "mask"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["pii"] == "mask"
    summary, _ = ingest(instance=instance)
    assert summary["planned"]["changed"] == 2 and summary["runs_failed"] == 0
    assert leaks(texts()["customer.txt"]) == []
    assert all_points("kb1")["customer.txt"][0].payload["pii_entities"] == FOUND

    assert ingest(instance=instance)[0]["planned"]["unchanged"] == 2  # settled: nothing to redo

    assert cli.invoke(app, ["kb", "set", "kb1", "--pii", "detect"]).exit_code == 0
    summary, _ = ingest(instance=instance)
    assert summary["planned"]["changed"] == 2
    assert leaks(texts()["customer.txt"]) == ORIGINALS  # detect: text unchanged, entities counted
    assert all_points("kb1")["customer.txt"][0].payload["pii_entities"] == FOUND
    row = catalog_rows("kb1")["customer.txt"]
    assert (row["pii_mode"], row["pii_entities"]) == ("detect", FOUND) and row["pii_seconds"] > 0

    assert cli.invoke(app, ["kb", "set", "kb1", "--pii", "off"]).exit_code == 0
    assert ingest(instance=instance)[0]["planned"]["changed"] == 2
    assert "pii_entities" not in all_points("kb1")["customer.txt"][0].payload
    assert catalog_rows("kb1")["customer.txt"]["pii_mode"] == "off"

    refused = cli.invoke(app, ["kb", "set", "kb1", "--pii", "redact"])
    assert refused.exit_code == 2 and "redact" in refused.output


def test_a_document_whose_analysis_fails_is_recorded_and_nothing_of_it_is_written(settings_env, monkeypatch):
    from quivr_pipelines.core import pii

    monkeypatch.setenv("QUIVR_PII", "mask")
    seed(settings_env)
    real_scrub = pii.scrub

    def scrub(texts, mode):  # the fault: the analyser breaks on this document's text
        if any("john.smith" in text for text in texts):
            raise RuntimeError("analyser crashed on " + texts[0])
        return real_scrub(texts, mode)

    monkeypatch.setattr(pii, "scrub", scrub)
    summary, instance = ingest()
    rows = catalog_rows("kb1")
    assert (rows["customer.txt"]["status"], rows["customer.txt"]["error_type"]) == ("failed", "pii_error")
    assert "PII analysis failed" in rows["customer.txt"]["failure_reason"]
    assert rows["plain.txt"]["status"] == "ingested"  # the rest of the run lands
    assert all_points("kb1")["customer.txt"] == []
    assert leaks(catalog_dump(settings_env) + dagster_events(instance) + vector_store_files(settings_env)) == []
