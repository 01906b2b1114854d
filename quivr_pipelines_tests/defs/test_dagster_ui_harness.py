"""The UI harness (quivr_pipelines_tests/dagster_ui.py) against toy assets of its own.

A dynamically partitioned asset with a partitioned check, loaded as a code location in a gRPC
code server like dagster-webserver does, over a real instance in a temporary folder:
`good` materialized with a passing check, `bad` materialized with a failing ERROR check,
`never` never materialized, `broken` in a run that failed. Plus an unpartitioned asset whose
unpartitioned check fails with WARN.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap

import dagster as dg
import pytest

from quivr_pipelines_tests import dagster_ui as ui

TOY_MODULE = textwrap.dedent(
    """
    import dagster as dg

    toy_kbs = dg.DynamicPartitionsDefinition(name="toy_kbs")


    @dg.asset(partitions_def=toy_kbs)
    def toy_documents(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        kb = context.partition_key
        if kb == "broken":
            raise RuntimeError("the object store is down")
        failed = 2 if kb == "bad" else 0
        return dg.MaterializeResult(
            metadata={
                "ingested": 3,
                "failed": failed,
                "failures": dg.MetadataValue.md("| document | reason |\\n|---|---|\\n| a.pdf | encrypted |"),
            }
        )


    @dg.asset_check(asset=toy_documents, partitions_def=toy_kbs)
    def toy_documents_ingested(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        kb = context.partition_key
        failed = 2 if kb == "bad" else 0
        return dg.AssetCheckResult(
            passed=failed == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"{failed} documents failed" if failed else "every document ingested",
            metadata={"failed": failed},
        )


    @dg.asset
    def toy_summary() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"knowledge_bases": 4})


    @dg.asset_check(asset=toy_summary)
    def toy_summary_complete() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={"missing": 1})


    defs = dg.Definitions(
        assets=[toy_documents, toy_summary],
        asset_checks=[toy_documents_ingested, toy_summary_complete],
    )
    """
)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy code location, its runs executed on a temporary instance, and a UI context over it."""
    folder = tmp_path_factory.mktemp("dagster_ui_toy")
    source = folder / "toy_ui_location.py"
    source.write_text(TOY_MODULE)
    spec = importlib.util.spec_from_file_location("toy_ui_location", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    home = folder / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        instance.add_dynamic_partitions("toy_kbs", ["good", "bad", "never", "broken"])
        partitioned = [module.toy_documents, module.toy_documents_ingested]
        for kb in ("good", "bad"):
            assert dg.materialize(partitioned, instance=instance, partition_key=kb).success
        broken = dg.materialize(partitioned, instance=instance, partition_key="broken", raise_on_error=False)
        assert not broken.success
        assert dg.materialize([module.toy_summary, module.toy_summary_complete], instance=instance).success

        sys.modules.pop("toy_ui_location", None)
        with ui.ui_context(
            instance, python_file=source, attribute="defs", working_directory=folder, location_name="toy"
        ) as context:
            yield context, broken.run_id


def test_partitions_tab_reports_materialized_failed_and_missing(toy):
    context, _ = toy
    status = ui.asset_partition_status(context, "toy_documents")
    assert status == {
        "materialized": ["good", "bad"],
        "materializing": [],
        "failed": ["broken"],
        "missing": ["never"],
    }
    assert ui.asset_partition_stats(context, "toy_documents") == {
        "materialized": 2,
        "failed": 1,
        "materializing": 0,
        "missing": 1,
        "total": 4,
    }


def test_overview_status_shows_the_latest_failed_run_of_any_partition(toy):
    context, broken_run_id = toy
    assert ui.asset_overview_status(context, "toy_documents") == {"status": "FAILED", "run_id": broken_run_id}
    assert ui.asset_overview_status(context, "toy_summary")["status"] == "MATERIALIZED"
    definition = ui.asset_definition(context, "toy_documents")
    assert (
        definition["definition"]["partitionDefinition"]["dimensionTypes"][0]["dynamicPartitionsDefinitionName"]
        == "toy_kbs"
    )


def test_latest_materialization_metadata_overall_and_per_partition(toy):
    context, _ = toy
    latest = ui.latest_materialization(context, "toy_documents")
    assert latest["partition"] == "bad"  # the overview shows the newest over all partitions
    assert latest["metadata"]["ingested"] == 3 and latest["metadata"]["failed"] == 2
    assert latest["metadata"]["failures"].startswith("| document | reason |")

    assert ui.latest_materialization_metadata(context, "toy_documents", partition="good")["failed"] == 0
    assert ui.latest_materialization_metadata(context, "toy_documents", partition="never") == {}
    assert ui.latest_materialization_metadata(context, "toy_summary") == {"knowledge_bases": 4}


def test_partition_detail_shows_the_failed_run(toy):
    context, broken_run_id = toy
    detail = ui.partition_detail(context, "toy_documents", "broken")
    assert detail["latest_run"] == {"id": broken_run_id, "status": "FAILURE"}
    # An OSS instance stores no FAILED_TO_MATERIALIZE events: the pane has only the failed run.
    assert detail["events"] == []
    good = ui.partition_detail(context, "toy_documents", "good")
    assert [event["type"] for event in good["events"]] == ["MaterializationEvent"]


def test_check_partitions_tab(toy):
    context, _ = toy
    statuses = ui.check_partition_statuses(context, "toy_documents", "toy_documents_ingested")
    # The check step of the failed run was planned and never ran: "Execution failed".
    assert statuses == {"good": "SUCCEEDED", "bad": "FAILED", "never": "MISSING", "broken": "EXECUTION_FAILED"}


def test_check_execution_history(toy):
    context, _ = toy
    latest = ui.check_latest_execution(context, "toy_documents", "toy_documents_ingested", partition="bad")
    assert latest["status"] == "FAILED" and latest["severity"] == "ERROR"
    assert latest["partition"] == "bad" and latest["metadata"] == {"failed": 2}
    assert latest["description"] == "2 documents failed"

    good = ui.check_latest_execution(context, "toy_documents", "toy_documents_ingested", partition="good")
    assert good["status"] == "SUCCEEDED" and good["metadata"] == {"failed": 0}
    assert ui.check_latest_execution(context, "toy_documents", "toy_documents_ingested", partition="never") is None

    history = ui.check_executions(context, "toy_documents", "toy_documents_ingested")
    # Not compared in order: the UI sorts by evaluation time, or by the execution's start time
    # when there is no evaluation, which SQLite stores to the second.
    assert {(e["partition"], e["status"]) for e in history} == {
        ("broken", "EXECUTION_FAILED"),
        ("bad", "FAILED"),
        ("good", "SUCCEEDED"),
    }
    broken = next(e for e in history if e["partition"] == "broken")
    assert broken["severity"] is None and broken["run_status"] == "FAILURE"

    warn = ui.check_latest_execution(context, "toy_summary", "toy_summary_complete")
    assert (warn["status"], warn["severity"], warn["partition"]) == ("FAILED", "WARN", None)


def test_check_badges_like_the_overview_and_checks_tab(toy):
    context, _ = toy
    assert ui.check_badges(context, "toy_documents") == {"toy_documents_ingested": "ERROR"}
    assert ui.check_badges(context, "toy_summary") == {"toy_summary_complete": "WARN"}
    checks = ui.asset_checks(context, "toy_documents")
    assert checks["toy_documents_ingested"]["badge"] == "ERROR"
    assert checks["toy_documents_ingested"]["partitioned"] is True


def test_asset_health_is_not_served_by_an_oss_instance(toy):
    context, _ = toy
    assert ui.asset_health(context, "toy_documents") is None


def test_new_partitions_show_up_without_reloading(toy):
    """Each query is a fresh request context, like a webserver request: no stale partitions."""
    context, _ = toy
    context.instance.add_dynamic_partitions("toy_kbs", ["added_later"])
    try:
        assert "added_later" in ui.asset_partition_status(context, "toy_documents")["missing"]
        assert (
            ui.check_partition_statuses(context, "toy_documents", "toy_documents_ingested")["added_later"] == "MISSING"
        )
    finally:
        context.instance.delete_dynamic_partition("toy_kbs", "added_later")


def test_the_ui_bundle_operations_run_and_match_the_trimmed_copies(toy):
    context, _ = toy
    for name in ui.QUERIES:
        trimmed = ui.QUERIES[name]
        declared = [v.split(":")[0].strip() for v in trimmed.split("(", 1)[1].split(")", 1)[0].split(",")]
        assert [f"${v}" for v in ui.ui_operation_variables(name)] == declared, name
    for view, names in ui.UI_VIEWS.items():
        for name in names:
            variables = ui.ui_variables(name, "toy_documents", check_name="toy_documents_ingested", partition="bad")
            data, seconds = ui.timed(ui.run_ui_operation, context, name, variables)
            assert data and seconds >= 0, (view, name)
    assert ui.time_ui_view(context, "asset_partitions", "toy_documents").keys() == set(ui.UI_VIEWS["asset_partitions"])
