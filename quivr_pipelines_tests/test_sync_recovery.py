"""A killed ingestion converges after a retry; reconciliation repairs drift between the systems."""

import os
import signal
import subprocess
import sys
import time

import dagster as dg

from quivr_pipelines.core import sparse
from quivr_pipelines.core.factory import build_vector_store, open_database
from quivr_pipelines.core.keys import point_id
from quivr_pipelines.core.vectorstore.base import PointRecord
from quivr_pipelines.defs.maintenance.reconciliation import kb_reconciliation
from quivr_pipelines.resources import resources_from_settings
from quivr_pipelines.runner import dagster_instance
from quivr_pipelines.settings import get_settings
from quivr_pipelines_tests.conftest import DOCS
from quivr_pipelines_tests.helpers import all_points, catalog_rows, ingest, ingest_documents_job


def make_corpus(settings, kb, count):
    base = (DOCS / "norwich-city.txt").read_text()
    folder = settings.inbox_dir / kb
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"doc-{i:03d}.txt").write_text(f"Document {i}.\n\n" + base[i * 500:(i * 500) + 3000])


def ingested_count(kb):
    return sum(row["status"] == "ingested" for row in catalog_rows(kb).values())


def kill_an_ingestion_run_midway(kb: str, count: int) -> int:
    """Start `quivr-pipelines ingest` in its own process and SIGKILL it, workers included, once
    its first batch is recorded. Returns how many documents were done at the kill."""
    env = {**os.environ, "QUIVR_PARSE_WORKERS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "quivr_pipelines.cli", "ingest"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while ingested_count(kb) == 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = ingested_count(kb)
    assert 0 < killed_at < count, f"kill landed at {killed_at} documents"
    return killed_at


def assert_same_points_as_a_clean_run(settings, kb: str, count: int) -> None:
    recovered = {k: {(p.id, p.payload["text"]) for p in v} for k, v in all_points(kb).items()}
    make_corpus(settings, "clean", count)  # the same documents in another KB, ingested cleanly
    ingest(kbs=["clean"])
    clean = all_points("clean")
    assert len(recovered) == count
    for key, points in recovered.items():
        expected = {(point_id(kb, key, p.payload["chunk_index"]), p.payload["text"]) for p in clean[key]}
        assert points == expected, key
    store = build_vector_store(get_settings())
    try:  # no duplicates, nothing stale: exactly the recovered points
        assert store.count(kb) == sum(len(v) for v in recovered.values())
    finally:
        store.close()


def test_a_run_killed_midway_converges_after_the_next_sync(settings_env):
    make_corpus(settings_env, "kb1", 48)  # two batches: 32 + 16
    kill_an_ingestion_run_midway("kb1", 48)

    # The dead run's documents are "requested" until QUIVR_SYNC_REQUEST_TIMEOUT_MINUTES pass;
    # then the next sync asks again. Let that time pass.
    db = open_database(get_settings())
    with db.transaction() as conn:
        conn.execute("UPDATE documents SET requested_at = requested_at - interval '2 hours'")
    db.close()
    summary, _ = ingest()
    assert summary["runs_failed"] == 0
    assert ingested_count("kb1") == 48
    assert_same_points_as_a_clean_run(settings_env, "kb1", 48)


def test_a_run_killed_midway_converges_after_dagsters_run_retry(settings_env):
    make_corpus(settings_env, "kb1", 48)
    kill_an_ingestion_run_midway("kb1", 48)
    instance = dagster_instance(get_settings())  # the instance the killed run wrote to
    [killed] = instance.get_runs()
    assert killed.status == dg.DagsterRunStatus.STARTED
    assert killed.tags["dagster/max_retries"] == "2"

    # What the daemon does: run monitoring finds the worker dead and fails the run, then the
    # run-retry daemon re-executes it from failure with the parent's tags (the same range) and
    # the retry number (`create_reexecuted_run(use_parent_run_tags=True)`).
    instance.report_run_failed(killed)
    retry = dg.execute_job(
        dg.reconstructable(ingest_documents_job), instance=instance,
        reexecution_options=dg.ReexecutionOptions.from_failure(killed.run_id, instance),
        tags={**killed.tags, "dagster/retry_number": "1"},
    )
    assert retry.success
    assert retry.dagster_run.parent_run_id == killed.run_id
    assert retry.dagster_run.tags["dagster/partition"] == killed.tags["dagster/partition"] == "kb1"
    assert retry.dagster_run.run_config == killed.run_config  # the same documents
    assert ingested_count("kb1") == 48
    assert_same_points_as_a_clean_run(settings_env, "kb1", 48)


def test_reconciliation_deletes_orphans_and_requeues_documents_with_lost_points(settings_env):
    make_corpus(settings_env, "kb1", 3)
    _, instance = ingest()
    store = build_vector_store(settings_env)
    collection = store.resolve_alias("kb1")
    try:
        # Drift 1: points of a document the catalog never ingested (an interrupted old run).
        vector = [0.0] * 383 + [1.0]
        store.replace_document(collection, "kb1", "ghost.txt", [PointRecord(
            point_id("kb1", "ghost.txt", 0), vector, sparse.document_vector("ghost"),
            {"kb": "kb1", "document_key": "ghost.txt", "chunk_index": 0, "text": "ghost"})])
        # Drift 2: a document's points lost (a restore from an older backup).
        store.delete_document(collection, "kb1", "doc-001.txt")
    finally:
        store.close()

    result = dg.materialize([kb_reconciliation], instance=instance, resources=resources_from_settings(get_settings()))
    metadata = result.asset_materializations_for_node("kb_reconciliation")[0].metadata
    assert metadata["repaired"].value == 2
    report = metadata["report"].value["kb1"]
    assert report["orphan_points_deleted"] == 1 and report["reset_for_reingestion"] == 1
    assert all_points("kb1").get("ghost.txt", []) == []
    assert catalog_rows("kb1")["doc-001.txt"]["status"] == "pending"

    summary, _ = ingest(instance=instance)  # the next sync repairs it
    assert summary["planned"]["new"] == 1
    row = catalog_rows("kb1")["doc-001.txt"]
    assert len(all_points("kb1")["doc-001.txt"]) == row["chunk_count"] > 0, (row["status"], row["error_type"], row["failure_reason"])
