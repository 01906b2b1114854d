"""Idempotence, change, bad inputs and hostile keys, through Dagster runs on real components."""

import json
import os
import shutil

import boto3
import dagster as dg
import pytest

from quivr_pipelines.core.keys import escape_key
from quivr_pipelines.defs.ingestion.documents import ALL_CHECK, KB_CHECK
from quivr_pipelines_tests.conftest import DOCS
from quivr_pipelines_tests.helpers import all_points, catalog_rows, ingest, normalise

SMALL_DOCS = ["fake-text.txt", "norwich-city.txt", "pdf/reliance.pdf", "fake-power-point.pptx",
              "stanley-cups.csv", "README.md"]


def seed(settings, kb="kb1", docs=SMALL_DOCS):
    root = settings.inbox_dir / kb
    for rel in docs:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DOCS / rel, target)
    return root


def snapshot(kb):
    return {key: [(p.id, p.payload) for p in points] for key, points in all_points(kb).items()}


def test_rerun_converges_to_identical_points_and_embeds_nothing(settings_env):
    seed(settings_env)
    first, instance = ingest()
    assert first["runs"] == 1 and first["runs_failed"] == 0
    before = snapshot("kb1")
    assert all(before[key] for key in SMALL_DOCS)

    second, _ = ingest(instance=instance)
    assert second["runs"] == 0 and second["planned"]["unchanged"] == len(SMALL_DOCS)
    assert snapshot("kb1") == before

    # A forced re-run re-processes everything; ids and payloads are the same except the
    # ingestion time, and the embedding cache means no new embedding call.
    from quivr_pipelines.core.factory import open_database
    from quivr_pipelines.settings import get_settings

    db = open_database(get_settings())
    with db.transaction() as conn:
        calls_before = conn.execute("SELECT count(*) FROM usage_ledger").fetchone()[0]
    assert calls_before >= 1
    forced, _ = ingest(instance=instance, force=True)
    assert forced["runs"] == 1
    after = snapshot("kb1")
    strip = lambda snap: {k: [(i, {**p, "ingested_at": None}) for i, p in v] for k, v in snap.items()}  # noqa: E731
    assert strip(after) == strip(before)
    with db.transaction() as conn:
        assert conn.execute("SELECT count(*) FROM usage_ledger").fetchone()[0] == calls_before
    db.close()


def test_changed_document_loses_its_stale_chunks(settings_env):
    root = seed(settings_env, docs=["norwich-city.txt"])
    _, instance = ingest()
    old = all_points("kb1")["norwich-city.txt"]
    assert len(old) > 5
    (root / "norwich-city.txt").write_text("Norwich City is a football club.\n\nIt plays at Carrow Road.\n")
    summary, _ = ingest(instance=instance)
    assert summary["planned"]["changed"] == 1
    new = all_points("kb1")["norwich-city.txt"]
    assert len(new) == 1 and "carrow road" in normalise(new[0].payload["text"])
    row = catalog_rows("kb1")["norwich-city.txt"]
    assert row["status"] == "ingested" and row["chunk_count"] == 1
    assert new[0].payload["version"] == row["etag"]


def test_touched_but_identical_file_is_not_reparsed(settings_env):
    root = seed(settings_env, docs=["fake-text.txt"])
    _, instance = ingest()
    before = snapshot("kb1")
    stat = (root / "fake-text.txt").stat()
    os.utime(root / "fake-text.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000_000))
    summary, _ = ingest(instance=instance)
    assert summary["planned"]["changed"] == 1  # the etag (mtime) changed ...
    assert snapshot("kb1") == before  # ... but the content did not: nothing was rewritten
    assert catalog_rows("kb1")["fake-text.txt"]["etag"].startswith(format(stat.st_mtime_ns + 10_000_000_000, "x"))


def test_bad_inputs_are_recorded_and_the_rest_of_the_run_lands(settings_env, monkeypatch, capfd):
    monkeypatch.setenv("QUIVR_MAX_UPLOAD_SIZE_MB", "0.01")  # 10 KB
    root = seed(settings_env, docs=["fake-text.txt"])
    (root / "blank.md").write_bytes(b"   \n\t \n")
    (root / "zero.txt").write_bytes(b"")
    (root / "big.txt").write_bytes(b"word " * 5000)
    (root / "truncated.docx").write_bytes((DOCS / "fake-power-point.pptx").read_bytes()[:3000])
    (root / "truncated.pdf").write_bytes((DOCS / "pdf/reliance.pdf").read_bytes()[:2000])
    (root / "binary.exe").write_bytes(b"MZ\x90\x00" * 100)
    (root / "bad\x1bname.txt").write_bytes(b"control character in the name")
    sources = {p: p.read_bytes() for p in root.iterdir()}

    summary, instance = ingest()
    assert summary["runs_failed"] == 0
    rows = catalog_rows("kb1")
    expected = {
        "blank.md": ("skipped", "empty", "only whitespace"),
        "zero.txt": ("skipped", "empty", "zero-byte"),
        "big.txt": ("skipped", "too_large", "MAX_UPLOAD_SIZE_MB"),
        "truncated.docx": ("failed", "corrupt", "damaged or truncated .docx"),
        "truncated.pdf": ("failed", "corrupt", "PDF"),
        "binary.exe": ("skipped", "unsupported_type", "unsupported file type .exe"),
        "bad\\x1bname.txt": ("failed", "hostile_key", "control characters"),  # recorded escaped
    }
    for key, (status, error_type, reason) in expected.items():
        row = rows[key]
        assert (row["status"], row["error_type"]) == (status, error_type), (key, row["failure_reason"])
        assert reason in row["failure_reason"], (key, row["failure_reason"])
    assert rows["fake-text.txt"]["status"] == "ingested"
    assert {p: p.read_bytes() for p in root.iterdir()} == sources  # sources untouched

    # Structured JSON events, one per failure.
    logged = [json.loads(line) for line in capfd.readouterr().err.splitlines()
              if line.startswith("{") and '"ingestion_failed"' in line]
    by_file = {event["filename"]: event for event in logged}
    assert by_file["truncated.docx"]["error_type"] == "corrupt"
    assert set(by_file) >= set(expected)
    assert all(event["error_message"] for event in logged)

    # Failed asset checks, for the KB partition and for the whole asset, with every reason.
    [run] = instance.get_runs(dg.RunsFilter(job_name="ingest_documents_job"))
    evaluations = {e.check_name: e for e in _check_evaluations(instance, run.run_id)}
    kb_check, all_check = evaluations[KB_CHECK], evaluations[ALL_CHECK]
    assert kb_check.partition == "kb1" and all_check.partition is None
    for evaluation in (kb_check, all_check):
        assert evaluation.passed is False and evaluation.severity == dg.AssetCheckSeverity.ERROR
    problems = kb_check.metadata["problems"].value
    for key, (status, error_type, _) in expected.items():
        assert f"| {status} | {key} | {error_type} |" in problems
    assert "damaged or truncated" in problems
    assert kb_check.metadata["failed"].value == sum(s == "failed" for s, _, _ in expected.values())


def _check_evaluations(instance, run_id):
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    return [record.event_log_entry.dagster_event.event_specific_data for record in records]


def test_hostile_object_keys_from_s3_never_escape_or_sink_the_run(settings_env, monkeypatch, s3_server, s3_bucket):
    monkeypatch.setenv("QUIVR_OBJECT_STORE", "s3")
    monkeypatch.setenv("QUIVR_S3_BUCKET", s3_bucket)
    monkeypatch.setenv("QUIVR_S3_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("QUIVR_S3_PREFIX", "tenant")
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    body = (DOCS / "fake-text.txt").read_bytes()
    hostile = ["../../etc/passwd", "a/../../b.txt", "/abs/path.txt", "tab\tname.txt"]
    for key in ["good.txt", "sub/also-good.txt", *hostile]:
        client.put_object(Bucket=s3_bucket, Key=f"tenant/kb1/{key}", Body=body)
    before = {o["Key"]: o["ETag"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]}

    summary, _ = ingest()
    assert summary["runs_failed"] == 0
    rows = catalog_rows("kb1")
    assert rows["good.txt"]["status"] == rows["sub/also-good.txt"]["status"] == "ingested"
    assert rows["good.txt"]["source_uri"] == f"s3://{s3_bucket}/tenant/kb1/good.txt"
    for key in hostile:  # recorded under the escaped name (tab\x09name.txt)
        key = escape_key(key)
        assert (rows[key]["status"], rows[key]["error_type"]) == ("failed", "hostile_key"), key
    after = {o["Key"]: o["ETag"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert after == before


@pytest.mark.parametrize("kb_count", [2])
def test_several_kbs_side_by_side_each_behind_its_alias(settings_env, kb_count):
    for n in range(kb_count):
        seed(settings_env, kb=f"team-{n}", docs=["fake-text.txt", "stanley-cups.csv"])
    summary, _ = ingest()
    assert summary["runs_failed"] == 0
    from quivr_pipelines.core.factory import build_vector_store

    store = build_vector_store(settings_env)
    try:
        for n in range(kb_count):
            info = store.collection_info(f"team-{n}")
            assert info.name.startswith(f"kb_team-{n}__") and info.points == 2
            assert info.fingerprint == catalog_rows(f"team-{n}")["fake-text.txt"]["embedding_model"]
    finally:
        store.close()


def test_vector_index_asset_builds_indexes_and_keeps_every_point(settings_env):
    import dagster as dg

    from quivr_pipelines.defs.maintenance.vector_indexes import vector_indexes
    from quivr_pipelines.resources import EmbeddedVectorStoreResource

    seed(settings_env, docs=["norwich-city.txt"])
    ingest()
    before = snapshot("kb1")
    # The twin handed as a resource instance, as a test of any asset can.
    store = EmbeddedVectorStoreResource(path=str(settings_env.qdrant_dir))
    result = dg.materialize([vector_indexes], resources={"vector_store": store}, selection=[vector_indexes])
    assert result.success
    metadata = result.asset_materializations_for_node("vector_indexes")[0].metadata
    assert metadata["points"].value == len(before["norwich-city.txt"])
    assert snapshot("kb1") == before
