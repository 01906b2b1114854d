"""`reembed_job` through the CLI, as a user runs it: real Dagster runs in the project's instance,
the five blocking checks, the swap, a gate that blocks, a killed run resumed, rollback, cleanup.
Real components: PostgreSQL, qdrant-edge, the local model, the OpenAI-compatible test server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest
from typer.testing import CliRunner

from quivr_pipelines.cli import app
from quivr_pipelines.core import generations
from quivr_pipelines.core.factory import build_vector_store, open_database
from quivr_pipelines.runner import dagster_instance
from quivr_pipelines.settings import get_settings
from quivr_pipelines_tests.conftest import SHARED_DATA
from quivr_pipelines_tests.helpers import catalog_rows, ingest
from quivr_pipelines_tests.openai_stub import OpenAIStub

runner = CliRunner()
KB = "manuals"
CHECKS = ("documents_complete", "dimensions", "fingerprint", "payload_indexes", "retrieval_quality")
XQUAD = SHARED_DATA / "retrieval" / "xquad_en" / "passages.jsonl"


def xquad_passages(n: int) -> list[tuple[str, str]]:
    """The first passage of `n` different XQuAD articles: real text, no two documents alike (with
    repeated paragraphs, a golden query would tie between documents and its ranking be arbitrary)."""
    found: dict[str, str] = {}
    for line in XQUAD.read_text().splitlines():
        row = json.loads(line)
        found.setdefault(row["title"].replace("_", " "), row["text"])
        if len(found) == n:
            break
    return list(found.items())


@pytest.fixture(scope="module")
def stub():
    with OpenAIStub(dimensions=16) as server:
        yield server


@pytest.fixture
def kb(settings_env, monkeypatch, stub):
    monkeypatch.setenv("QUIVR_EMBEDDERS", f"openai:stub-embed:16@{stub.url}")
    monkeypatch.setenv("QUIVR_REEMBED_PAGE_SIZE", "8")
    inbox = get_settings().inbox_dir / KB
    inbox.mkdir(parents=True)
    for i, (title, text) in enumerate(xquad_passages(16)):
        (inbox / f"manual{i:02d}.md").write_text(f"# {title}\n\n{text}\n")
    ingest(instance=dagster_instance(get_settings()))
    return KB


def served():
    store = build_vector_store(get_settings())
    try:
        return store.resolve_alias(KB), store.collection_info(KB)
    finally:
        store.close()


def history():
    db = open_database(get_settings())
    try:
        return generations.history(db, KB)
    finally:
        db.close()


def check_evaluations(run_id: str) -> dict[str, bool]:
    instance = dagster_instance(get_settings())
    found = {}
    for name in CHECKS:
        key = dg.AssetCheckKey(dg.AssetKey("kb_generation"), f"check_generation_{name}")
        for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=5):
            if record.run_id == run_id and record.event and record.event.dagster_event:
                evaluation = record.event.dagster_event.event_specific_data
                found[name] = getattr(evaluation, "passed", None)
    return found


def test_reembed_with_passing_gates_swaps_and_rollback_and_cleanup_undo_it(kb):
    before, _ = served()
    dry = runner.invoke(app, ["reembed", KB, "--no-context-headers", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert '"mode": "copy"' in dry.output and '"chunks_to_embed"' in dry.output
    done = runner.invoke(app, ["reembed", KB, "--no-context-headers", "--json"])
    assert done.exit_code == 0, done.output
    after, info = served()
    assert after != before and after.endswith("__g2") and info.fingerprint == "local:all-MiniLM-L6-v2:384"
    (new,) = [g for g in history() if g.generation == 2]
    assert new.state == "serving" and new.chunking["context_headers"] is False
    assert check_evaluations(new.dagster_run_id) == dict.fromkeys(CHECKS, True)
    assert {r["collection"] for r in catalog_rows(KB).values()} == {after}

    back = runner.invoke(app, ["reembed", "rollback", KB])
    assert back.exit_code == 0, back.output
    assert served()[0] == before
    status = runner.invoke(app, ["reembed", "status", KB])
    assert "g1 serving" in status.output and "g2 retired" in status.output

    os.environ["QUIVR_REEMBED_ROLLBACK_HOURS"] = "0"
    try:
        cleaned = runner.invoke(app, ["reembed", "cleanup"])
    finally:
        del os.environ["QUIVR_REEMBED_ROLLBACK_HOURS"]
    assert cleaned.exit_code == 0, cleaned.output
    assert {g.generation: g.state for g in history()} == {1: "serving", 2: "deleted"}


def test_a_gate_that_fails_blocks_the_swap_says_why_and_keeps_the_generation(kb):
    """The stub's vectors are noise (a hash of the text): the golden set retrieves worse."""
    before, _ = served()
    result = runner.invoke(app, ["reembed", KB, "--embedder", "openai:stub-embed:16", "--quality-margin", "0"])
    assert result.exit_code == 1
    assert "retrieval_quality" in result.output and "\n" not in result.output.strip().splitlines()[-1]
    assert served()[0] == before  # still serving the old generation
    (building,) = [g for g in history() if g.state == "building"]
    assert building.gates["retrieval_quality"]["passed"] is False
    assert building.gates["documents_complete"]["passed"] is True
    evaluations = check_evaluations(building.dagster_run_id)
    assert evaluations["retrieval_quality"] is False and evaluations["dimensions"] is True
    cancel = runner.invoke(app, ["reembed", "cancel", KB])
    assert cancel.exit_code == 0 and "given up" in cancel.output


def test_a_reembed_killed_midway_resumes_where_it_stopped(kb):
    env = {**os.environ, "QUIVR_REEMBED_PAGE_SIZE": "2"}
    args = ["reembed", KB, "--no-context-headers"]
    command = [sys.executable, "-m", "quivr_pipelines.cli", *args]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = open_database(get_settings())
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            gen = generations.building(db, KB)
            if gen is not None and gen.chunks_done >= 4:
                break
            assert process.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed = generations.building(db, KB)
        assert 0 < killed.chunks_done < killed.chunks_total
    finally:
        db.close()
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    gen = next(g for g in history() if g.generation == killed.generation)
    assert gen.state == "serving" and gen.chunks_done == gen.chunks_total
    store = build_vector_store(get_settings())
    try:
        counts = store.chunk_counts(gen.collection, KB)
    finally:
        store.close()
    assert counts == {k: r["chunk_count"] for k, r in catalog_rows(KB).items() if r["status"] == "ingested"}


def test_reembed_refuses_bad_input_in_one_line(kb):
    unknown = runner.invoke(app, ["reembed", "nosuchkb", "--embedder", "local"])
    assert unknown.exit_code == 1 and "error:" in unknown.output
    bad = runner.invoke(app, ["reembed", KB, "--embedder", "cohere:x", "--dry-run"])
    assert bad.exit_code == 1 and "is not one of" in bad.output
    same = runner.invoke(app, ["reembed", KB, "--dry-run"])
    assert same.exit_code == 1 and "nothing to re-embed" in same.output
    missing = runner.invoke(app, ["reembed", "rollback"])
    assert missing.exit_code == 2
