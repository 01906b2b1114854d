"""Object keys of any bytes, links, and files gone between listing and reading, end to end: through
`ingest` (the CLI's runner) and the sensor, as Dagster runs on real components (issue 9, item 3).

Before the fix, one key holding a byte that is not UTF-8 aborted the whole sync with a
UnicodeEncodeError (writing the pending row): no KB ingested, nothing recorded. Bidi-override and
zero-width names were ingested as ordinary names, a symlinked KB folder was walked, a hard link to a
file outside the store was ingested, and a file deleted after planning stayed `pending` for ever.
"""

import json
import os

import boto3
import dagster as dg
import pytest
from typer.testing import CliRunner

from quivr_pipelines.cli import app
from quivr_pipelines.defs.ingestion.documents import KB_CHECK
from quivr_pipelines_tests.conftest import DOCS
from quivr_pipelines_tests.defs.test_sensor import Tick, run_documents
from quivr_pipelines_tests.helpers import all_points, catalog_rows, ingest

BODY = (DOCS / "fake-text.txt").read_bytes()

# raw name -> (catalog name, words of the reason). Local names are bytes: `caf\xe9` is Latin-1.
LOCAL_ODD = {
    "caf\udce9.txt": ("caf\\xe9.txt", "not valid UTF-8"),
    "esc\x1b[31mred.txt": ("esc\\x1b[31mred.txt", "control characters"),
    "invoice\u202etxt.exe": ("invoice\\u202etxt.exe", "bidirectional-override"),
    "sub/zero\u200bwidth.txt": ("sub/zero\\u200bwidth.txt", "invisible"),
    "bom\ufeff.txt": ("bom\\ufeff.txt", "invisible"),
}
# S3 keys are UTF-8 by protocol, but anything else goes: NUL (PostgreSQL refuses it in text),
# controls, bidi, zero-width.
S3_ODD = {
    "nul\x00byte.txt": ("nul\\x00byte.txt", "control characters"),
    "esc\x1b[31mred.txt": ("esc\\x1b[31mred.txt", "control characters"),
    "invoice\u202etxt.exe": ("invoice\\u202etxt.exe", "bidirectional-override"),
    "iso\u2066late\u2069.txt": ("iso\\u2066late\\u2069.txt", "bidirectional-override"),
    "zero\u200bwidth.txt": ("zero\\u200bwidth.txt", "invisible"),
    "joiner\u2060.txt": ("joiner\\u2060.txt", "invisible"),
}
GOOD = ["good.txt", "sub/also-good.txt", "été 2024.txt"]


def put_local(settings, kb: str, raw: str, data: bytes = BODY) -> None:
    path = os.path.join(os.fsencode(settings.inbox_dir), kb.encode(), raw.encode("utf-8", "surrogateescape"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


@pytest.fixture(params=["local", "s3"])
def odd_store(request, settings_env, monkeypatch):
    """A KB of ordinary and odd keys in the local inbox or in S3 (moto over HTTP)."""
    if request.param == "local":
        for raw in [*GOOD, *LOCAL_ODD]:
            put_local(settings_env, "kb1", raw)
        return LOCAL_ODD
    server, bucket = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket")
    monkeypatch.setenv("QUIVR_OBJECT_STORE", "s3")
    monkeypatch.setenv("QUIVR_S3_BUCKET", bucket)
    monkeypatch.setenv("QUIVR_S3_ENDPOINT_URL", server)
    client = boto3.client("s3", endpoint_url=server, region_name="us-east-1")
    for key in [*GOOD, *S3_ODD]:
        client.put_object(Bucket=bucket, Key=f"kb1/{key}", Body=BODY)
    return S3_ODD


def _check_evaluations(instance):
    [run] = instance.get_runs(dg.RunsFilter(job_name="ingest_documents_job"), limit=1)
    records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    return {r.event_log_entry.dagster_event.event_specific_data.check_name: r.event_log_entry.dagster_event.event_specific_data
            for r in records}


def test_odd_keys_are_recorded_as_hostile_and_the_rest_of_the_kb_ingests(odd_store, capfd):
    summary, instance = ingest()
    assert summary["runs_failed"] == 0 and summary["planned"]["refused"] == len(odd_store)
    rows = catalog_rows("kb1")
    assert set(rows) == {*GOOD, *(name for name, _ in odd_store.values())}
    for key in GOOD:
        assert rows[key]["status"] == "ingested", (key, rows[key]["failure_reason"])
    points = all_points("kb1")
    for name, reason in odd_store.values():
        row = rows[name]
        assert (row["status"], row["error_type"]) == ("failed", "hostile_key"), name
        assert reason in row["failure_reason"] and row["etag"] and row["chunk_count"] == 0
        assert not points[name]  # never read, never indexed under a spoofable name
    logged = {json.loads(line)["filename"] for line in capfd.readouterr().err.splitlines()
              if line.startswith("{") and '"ingestion_failed"' in line}
    assert logged >= {name for name, _ in odd_store.values()}

    # The UI: the KB's check fails and its problems table shows every escaped name and reason.
    problems = _check_evaluations(instance)[KB_CHECK].metadata["problems"].value
    for name, reason in odd_store.values():
        assert f"| failed | {name} | hostile_key |" in problems and reason in problems

    # A re-run is idempotent: nothing planned, no row added or rewritten, no crash.
    again, _ = ingest(instance=instance)
    assert again["runs"] == 0 and again["planned"]["refused"] == 0
    assert again["planned"]["unchanged"] == len(GOOD) + len(odd_store)
    after = catalog_rows("kb1")
    assert {k: r["updated_at"] for k, r in after.items()} == {k: r["updated_at"] for k, r in rows.items()}


def test_the_sensor_plans_around_odd_keys_in_bounded_windows(settings_env, monkeypatch):
    """Windows of two objects over keys in byte order, where escaped names sort elsewhere:
    `a\\x01` escapes to `a\\\\x01`, after `a0`. Nothing crashes, a window never ends on an escaped
    name, and pass after pass nothing is counted missing or planned again."""
    monkeypatch.setenv("QUIVR_SYNC_OBJECTS_PER_TICK", "2")
    for raw in ["a\x01.txt", "a0.txt", "b\u202e.txt", "b0.txt", "caf\udce9.txt", "d.txt"]:
        put_local(settings_env, "kb1", raw)
    tick = Tick()
    for _ in range(4):  # two passes
        result = tick.evaluate()
        assert ":prune" not in {r.run_key for r in result.run_requests}
        assert all(not any("\\" in key for key in run_documents(r)) for r in result.run_requests)
        tick.run(result)
        after = json.loads(tick.cursor)["after"].get("kb1")
        assert after is None or "\\" not in after
    rows = catalog_rows("kb1")
    assert {k: r["status"] for k, r in rows.items()} == {
        "a\\x01.txt": "failed", "a0.txt": "ingested", "b\\u202e.txt": "failed", "b0.txt": "ingested",
        "caf\\xe9.txt": "failed", "d.txt": "ingested"}
    assert all(r["missing_passes"] == 0 for k, r in rows.items() if r["status"] == "ingested")
    assert not tick.evaluate().run_requests


def test_a_symlinked_kb_folder_is_not_walked_and_links_are_recorded_refused(settings_env, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    for i in range(20):
        (outside / f"file-{i}.txt").write_bytes(BODY)
    settings_env.inbox_dir.mkdir(parents=True)
    (settings_env.inbox_dir / "linked").symlink_to(outside, target_is_directory=True)
    kb = settings_env.inbox_dir / "kb1"
    kb.mkdir()
    (kb / "good.txt").write_bytes(BODY)
    (kb / "to-outside.txt").symlink_to(outside / "file-0.txt")
    (kb / "folder").symlink_to(outside, target_is_directory=True)
    os.link(outside / "file-1.txt", kb / "hard.txt")

    summary, _ = ingest(kbs=["linked", "kb1"])
    assert summary["runs_failed"] == 0
    assert catalog_rows("linked") == {}  # before: 20 rows named after the outside files
    rows = catalog_rows("kb1")
    assert rows["good.txt"]["status"] == "ingested"
    for key, reason in [("to-outside.txt", "symbolic link"), ("folder", "symbolic link"), ("hard.txt", "hard link")]:
        assert (rows[key]["status"], rows[key]["error_type"]) == ("failed", "hostile_key"), key
        assert reason in rows[key]["failure_reason"]
    assert set(rows) == {"good.txt", "to-outside.txt", "folder", "hard.txt"}  # nothing under folder/
    assert not all_points("kb1")["hard.txt"]  # before: ingested and searchable


def test_allowing_hard_links_ingests_them(settings_env, monkeypatch, tmp_path):
    monkeypatch.setenv("QUIVR_LOCAL_ALLOW_HARDLINKS", "true")
    (tmp_path / "original.txt").write_bytes(BODY)
    (settings_env.inbox_dir / "kb1").mkdir(parents=True)
    os.link(tmp_path / "original.txt", settings_env.inbox_dir / "kb1" / "hard.txt")
    ingest()
    assert catalog_rows("kb1")["hard.txt"]["status"] == "ingested"


def test_an_ingested_file_replaced_by_a_link_loses_its_chunks(settings_env, tmp_path):
    put_local(settings_env, "kb1", "doc.txt")
    _, instance = ingest()
    assert all_points("kb1")["doc.txt"]
    (tmp_path / "elsewhere.txt").write_bytes(b"something else entirely")
    path = settings_env.inbox_dir / "kb1" / "doc.txt"
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere.txt")
    summary, _ = ingest(instance=instance)
    assert summary["runs_failed"] == 0
    row = catalog_rows("kb1")["doc.txt"]
    assert (row["status"], row["error_type"]) == ("failed", "hostile_key")
    assert "symbolic link" in row["failure_reason"]
    assert not all_points("kb1")["doc.txt"]
    again, _ = ingest(instance=instance)
    assert again["runs"] == 0  # recorded once per version


def test_a_file_deleted_between_planning_and_reading_gets_a_final_status(settings_env):
    """Before: the run found it gone and wrote nothing; the row stayed `pending`, no reason."""
    for key in ("stays.txt", "goes.txt"):
        put_local(settings_env, "kb1", key)
    tick = Tick()
    result = tick.evaluate()  # planned: both rows pending
    assert {r["status"] for r in catalog_rows("kb1").values()} == {"pending"}
    (settings_env.inbox_dir / "kb1" / "goes.txt").unlink()
    tick.run(result)
    rows = catalog_rows("kb1")
    assert rows["stays.txt"]["status"] == "ingested"
    gone = rows["goes.txt"]
    assert (gone["status"], gone["error_type"]) == ("deleted", "not_found")
    assert "gone between listing and reading" in gone["failure_reason"]
    assert not tick.evaluate().run_requests  # final: not planned, not counted missing
    assert catalog_rows("kb1")["goes.txt"]["missing_passes"] == 0
    # If it comes back (even with the same etag), it is planned again at once.
    put_local(settings_env, "kb1", "goes.txt")
    os.utime(settings_env.inbox_dir / "kb1" / "goes.txt", ns=(0, 0))
    assert [run_documents(r) for r in tick.evaluate().run_requests] == [["goes.txt"]]


def test_an_ingested_file_deleted_before_reading_keeps_its_outcome_for_the_sync(settings_env):
    put_local(settings_env, "kb1", "doc.txt")
    tick = Tick()
    tick.sync()
    path = settings_env.inbox_dir / "kb1" / "doc.txt"
    path.write_bytes(BODY + b"\nchanged")
    result = tick.evaluate()
    path.unlink()
    tick.run(result)
    row = catalog_rows("kb1")["doc.txt"]
    assert row["status"] == "ingested" and all_points("kb1")["doc.txt"]  # the sync decides, after misses


def test_status_escapes_control_and_bidi_characters(settings_env):
    """Before: `status --kb` printed keys and reasons raw: ESC [31m turned the terminal red and
    U+202E reversed the rest of the line."""
    from quivr_pipelines.core.catalog import repository
    from quivr_pipelines.core.catalog.repository import DocumentRecord, default_kb_config
    from quivr_pipelines.core.factory import open_database

    db = open_database(settings_env)
    repository.ensure_kb(db, "kb1", default_kb_config(settings_env))
    # A row as an older version recorded it (raw key), and a reason quoting file content.
    repository.record_documents(db, [DocumentRecord(
        kb="kb1", object_key="old\x1b[31mred\u202etxt.exe", status="failed", error_type="parse_error",
        failure_reason="bad byte \x1b[2J in \u202eheader")])
    db.close()
    put_local(settings_env, "kb1", "esc\x1b[31mred\u202etxt.exe")
    ingest()
    result = CliRunner().invoke(app, ["status", "--kb", "kb1"])
    assert result.exit_code == 0
    assert "\x1b" not in result.output and "\u202e" not in result.output
    assert "old\\x1b[31mred\\u202etxt.exe: parse_error: bad byte \\x1b[2J in \\u202eheader" in result.output
    assert "esc\\x1b[31mred\\u202etxt.exe: hostile_key: object key contains control characters" in result.output


def test_a_run_launched_from_the_ui_records_refused_keys_too(settings_env):
    """A run launched without a document list (the UI's Materialize) plans its KB itself: it
    records the odd keys as `hostile_key`, as `ingest` and the sensor do, and ingests the rest."""
    from quivr_pipelines_tests.helpers import ingest_documents_job

    for raw in [*GOOD, *LOCAL_ODD]:
        put_local(settings_env, "kb1", raw)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("knowledge_bases", ["kb1"])
    result = ingest_documents_job().execute_in_process(instance=instance, partition_key="kb1",
                                                       raise_on_error=False)
    rows = catalog_rows("kb1")
    assert {k for k in GOOD if rows[k]["status"] == "ingested"} == set(GOOD)
    for name, reason in LOCAL_ODD.values():
        assert (rows[name]["status"], rows[name]["error_type"]) == ("failed", "hostile_key"), name
        assert reason in rows[name]["failure_reason"]
    assert result.success  # failed documents fail the check, not the run
    problems = _check_evaluations(instance)[KB_CHECK].metadata["problems"].value
    assert all(f"| failed | {name} | hostile_key |" in problems for name, _ in LOCAL_ODD.values())
