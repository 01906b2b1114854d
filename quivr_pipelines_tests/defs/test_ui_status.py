"""What the Dagster UI shows about documents, read through the GraphQL API the UI reads.

A real instance, the real code location loaded as `dagster-webserver` loads it, real runs: a KB
with an ingested, a failed and a skipped document, then a healthy KB, then the first KB repaired.
"""

import dagster as dg
import pytest

from quivr_pipelines.defs.ingestion.documents import ALL_CHECK, ASSET_KEY, KB_CHECK
from quivr_pipelines_tests import dagster_ui as ui
from quivr_pipelines_tests.conftest import DOCS
from quivr_pipelines_tests.helpers import ingest


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster-home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


def put(settings, kb, key, data: bytes):
    target = settings.inbox_dir / kb / key
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def test_failed_and_skipped_documents_are_never_shown_as_healthy(settings_env, instance):
    good = (DOCS / "fake-text.txt").read_bytes()
    put(settings_env, "kb1", "good.txt", good)
    put(settings_env, "kb1", "report.pdf", b"%PDF-1.7\nnot really a pdf")
    put(settings_env, "kb1", "empty.txt", b"")
    summary, _ = ingest(instance=instance)
    assert summary["runs_failed"] == 0

    with ui.ui_context(instance) as context:
        # The KB's partition: its counts, and every failed or skipped document with its reason.
        metadata = ui.latest_materialization_metadata(context, ASSET_KEY, partition="kb1")
        assert (metadata["ingested"], metadata["failed"], metadata["skipped"]) == (1, 1, 1)
        assert "| failed | report.pdf | corrupt |" in metadata["problems"]
        assert "| skipped | empty.txt | empty | zero-byte file |" in metadata["problems"]
        # The per-KB check fails (ERROR) on the check's Partitions tab, with the same table.
        assert ui.check_partition_statuses(context, ASSET_KEY, KB_CHECK) == {"kb1": "FAILED"}
        kb1 = ui.check_latest_execution(context, ASSET_KEY, KB_CHECK, partition="kb1")
        assert kb1["severity"] == "ERROR" and "| failed | report.pdf | corrupt |" in kb1["metadata"]["problems"]
        assert ui.check_badges(context, ASSET_KEY) == {KB_CHECK: "ERROR", ALL_CHECK: "ERROR"}

        # A healthy KB ingested next: its own check passes, but the asset's badge stays red.
        put(settings_env, "kb2", "good.txt", good)
        ingest(instance=instance)
        assert ui.check_partition_statuses(context, ASSET_KEY, KB_CHECK) == {"kb1": "FAILED", "kb2": "SUCCEEDED"}
        assert ui.check_badges(context, ASSET_KEY) == {KB_CHECK: "ERROR", ALL_CHECK: "ERROR"}
        everything = ui.check_latest_execution(context, ASSET_KEY, ALL_CHECK)
        assert everything["metadata"]["failed"] == 1 and everything["metadata"]["unhealthy_kbs"] == 1
        overview = ui.latest_materialization_metadata(context, ASSET_KEY)  # the newest KB, kb2
        assert overview["failed"] == 0 and "1 failed, 1 skipped" in overview["all_kbs"]
        assert ui.asset_partition_status(context, ASSET_KEY)["materialized"] == ["kb1", "kb2"]

        # The broken PDF replaced: kb1 is still not healthy (a skipped document), only WARN.
        put(settings_env, "kb1", "report.pdf", (DOCS / "pdf" / "reliance.pdf").read_bytes())
        ingest(instance=instance)
        kb1 = ui.check_latest_execution(context, ASSET_KEY, KB_CHECK, partition="kb1")
        assert kb1["passed"] is False and kb1["severity"] == "WARN"
        assert ui.check_badges(context, ASSET_KEY)[ALL_CHECK] == "WARN"

        # Nothing failed or skipped any more: green everywhere.
        put(settings_env, "kb1", "empty.txt", b"Now a document with words in it.\n")
        ingest(instance=instance)
        assert ui.check_partition_statuses(context, ASSET_KEY, KB_CHECK) == {"kb1": "SUCCEEDED", "kb2": "SUCCEEDED"}
        assert set(ui.check_badges(context, ASSET_KEY).values()) == {"SUCCEEDED"}
        metadata = ui.latest_materialization_metadata(context, ASSET_KEY, partition="kb1")
        assert (metadata["ingested"], metadata["failed"], metadata["skipped"]) == (3, 0, 0)
        assert metadata["problems"] == "No failed or skipped documents."
