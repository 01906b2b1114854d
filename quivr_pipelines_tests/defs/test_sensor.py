"""object_store_sensor: registers documents, batches them into range runs, never asks twice."""

import shutil

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from quivr_pipelines.core.keys import partition_key
from quivr_pipelines.definitions import defs
from quivr_pipelines.defs.ingestion.partitions import documents_partitions
from quivr_pipelines.defs.ingestion.sensors import object_store_sensor
from quivr_pipelines_tests.conftest import DOCS
from quivr_pipelines_tests.helpers import catalog_rows


def evaluate(instance, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs())
    return object_store_sensor(context), context.cursor


def test_sensor_batches_new_documents_and_does_not_request_them_twice(settings_env, monkeypatch):
    monkeypatch.setenv("QUIVR_DOCUMENTS_PER_RUN", "4")
    inbox = settings_env.inbox_dir / "kb1"
    inbox.mkdir(parents=True)
    for i in range(10):
        shutil.copyfile(DOCS / "fake-text.txt", inbox / f"doc-{i:02d}.txt")
    instance = dg.DagsterInstance.ephemeral()

    result, cursor = evaluate(instance)
    keys = [partition_key("kb1", f"doc-{i:02d}.txt") for i in range(10)]
    assert list(result.dynamic_partitions_requests[0].partition_keys) == keys
    ranges = [(r.tags[ASSET_PARTITION_RANGE_START_TAG], r.tags[ASSET_PARTITION_RANGE_END_TAG])
              for r in result.run_requests]
    assert ranges == [(keys[0], keys[3]), (keys[4], keys[7]), (keys[8], keys[9])]
    assert all(r.job_name == "ingest_documents_job" for r in result.run_requests)
    assert {row["status"] for row in catalog_rows("kb1").values()} == {"pending"}

    # The runs have not happened yet: the next tick must not request the same documents again.
    again, _ = evaluate(instance, cursor)
    assert not again.run_requests

    # Execute what the sensor asked for; afterwards nothing is left to do.
    instance.add_dynamic_partitions(documents_partitions.name, keys)
    job = defs().resolve_job_def("ingest_documents_job")
    for request in result.run_requests:
        assert job.execute_in_process(instance=instance, tags=request.tags).success
    assert {row["status"] for row in catalog_rows("kb1").values()} == {"ingested"}
    final, _ = evaluate(instance, cursor)
    assert not final.run_requests
