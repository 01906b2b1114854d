"""object_store_sensor through build_sensor_context: batching, cursor, deletions, no double asks."""

import json

import boto3
import dagster as dg
import pytest

from quivr_pipelines.definitions import defs
from quivr_pipelines.defs.ingestion.partitions import kb_partitions
from quivr_pipelines.defs.ingestion.sensors import object_store_sensor
from quivr_pipelines.runner import execute_requests
from quivr_pipelines_tests.conftest import DOCS
from quivr_pipelines_tests.helpers import all_points, catalog_rows


class Tick:
    """Evaluate the sensor like the daemon does, and carry out what it asked for."""

    def __init__(self):
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor = None
        self.definitions = defs()

    def evaluate(self):
        with dg.build_sensor_context(instance=self.instance, cursor=self.cursor,
                                     resources=self.definitions.resources) as context:
            result = object_store_sensor(context)
        self.cursor = context.cursor
        return result

    def run(self, result):
        summary = execute_requests(self.instance, self.definitions, result)
        assert summary.runs_failed == 0

    def sync(self):
        result = self.evaluate()
        self.run(result)
        return result


def run_documents(request: dg.RunRequest) -> list[str]:
    return request.run_config["ops"]["indexed_documents"]["config"]["documents"]


def put(settings, kb, key, source="fake-text.txt", data=None):
    target = settings.inbox_dir / kb / key
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data if data is not None else (DOCS / source).read_bytes())


def test_sensor_batches_new_documents_and_does_not_request_them_twice(settings_env, monkeypatch):
    monkeypatch.setenv("QUIVR_DOCUMENTS_PER_RUN", "4")
    for i in range(10):
        put(settings_env, "kb1", f"doc-{i:02d}.txt")
    tick = Tick()

    result = tick.evaluate()
    keys = [f"doc-{i:02d}.txt" for i in range(10)]
    assert list(result.dynamic_partitions_requests[0].partition_keys) == ["kb1"]  # one per KB
    batches = [run_documents(r) for r in result.run_requests]
    assert batches == [keys[0:4], keys[4:8], keys[8:10]]
    assert all(r.job_name == "ingest_documents_job" and r.partition_key == "kb1" for r in result.run_requests)
    assert {row["status"] for row in catalog_rows("kb1").values()} == {"pending"}

    # The runs have not happened yet: the next tick must not request the same documents again.
    assert not tick.evaluate().run_requests

    tick.run(result)
    assert {row["status"] for row in catalog_rows("kb1").values()} == {"ingested"}
    assert not tick.evaluate().run_requests


def test_a_tick_lists_a_bounded_window_and_resumes_from_its_cursor(settings_env, monkeypatch):
    monkeypatch.setenv("QUIVR_SYNC_OBJECTS_PER_TICK", "4")
    for i in range(10):
        put(settings_env, "kb1", f"doc-{i:02d}.txt")
    tick = Tick()
    requested = []
    for expected_after in ("doc-03.txt", "doc-07.txt", None):
        result = tick.evaluate()
        cursor = json.loads(tick.cursor)
        assert cursor["after"].get("kb1") == expected_after
        requested += [run_documents(r)[0] for r in result.run_requests]
        tick.run(result)
    assert json.loads(tick.cursor)["passes"]["kb1"] == 1
    assert len(requested) == 3
    assert {row["status"] for row in catalog_rows("kb1").values()} == {"ingested"}


@pytest.fixture(params=["local", "s3"])
def store_kind(request, monkeypatch, settings_env):
    if request.param == "s3":
        server, bucket = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket")
        monkeypatch.setenv("QUIVR_OBJECT_STORE", "s3")
        monkeypatch.setenv("QUIVR_S3_BUCKET", bucket)
        monkeypatch.setenv("QUIVR_S3_ENDPOINT_URL", server)
        client = boto3.client("s3", endpoint_url=server, region_name="us-east-1")

        def put_s3(key, source="fake-text.txt", data=None):
            client.put_object(Bucket=bucket, Key=f"kb1/{key}",
                              Body=data if data is not None else (DOCS / source).read_bytes())

        def delete_s3(key):
            client.delete_object(Bucket=bucket, Key=f"kb1/{key}")

        return put_s3, delete_s3

    def put_local(key, source="fake-text.txt", data=None):
        put(settings_env, "kb1", key, source, data)

    def delete_local(key):
        (settings_env.inbox_dir / "kb1" / key).unlink()

    return put_local, delete_local


def test_add_edit_delete_rename_and_readd_converge(settings_env, store_kind):
    put_object, delete_object = store_kind
    put_object("a.txt", "fake-text.txt")
    put_object("b/norwich.txt", "norwich-city.txt")
    put_object("c.csv", "stanley-cups.csv")
    tick = Tick()
    tick.sync()
    assert {k: r["status"] for k, r in catalog_rows("kb1").items()} == dict.fromkeys(
        ["a.txt", "b/norwich.txt", "c.csv"], "ingested")

    put_object("a.txt", data=b"An edited document about Carrow Road.\n")       # edit
    delete_object("c.csv")                                                    # delete
    put_object("renamed/norwich.txt", "norwich-city.txt")                    # rename (1/2)
    delete_object("b/norwich.txt")                                            # rename (2/2)
    put_object("copy-of-a.txt", "fake-text.txt")                              # old content, new key
    first = tick.sync()
    assert {r.job_name for r in first.run_requests} == {"ingest_documents_job"}  # one miss only: no prune
    rows = catalog_rows("kb1")
    assert rows["c.csv"]["status"] == "ingested" and rows["c.csv"]["missing_passes"] == 1
    assert "carrow road" in all_points("kb1")["a.txt"][0].payload["text"].lower()

    second = tick.sync()  # second consecutive miss: confirmed, pruned
    assert "prune_documents_job" in {r.job_name for r in second.run_requests}
    rows = catalog_rows("kb1")
    assert rows["c.csv"]["status"] == rows["b/norwich.txt"]["status"] == "deleted"
    points = all_points("kb1")
    assert points["c.csv"] == [] and points["b/norwich.txt"] == []
    assert len(points["renamed/norwich.txt"]) == rows["renamed/norwich.txt"]["chunk_count"] > 5
    # Partitions are KBs: deleting documents leaves nothing to clean up in the instance.
    assert tick.instance.get_dynamic_partitions(kb_partitions.name) == ["kb1"]

    put_object("c.csv", "stanley-cups.csv")  # re-added after deletion
    tick.sync()
    assert catalog_rows("kb1")["c.csv"]["status"] == "ingested" and all_points("kb1")["c.csv"]
    assert not tick.sync().run_requests  # nothing left to do


def test_a_listing_that_misses_an_object_once_deletes_nothing(settings_env, monkeypatch):
    from quivr_pipelines.core import objects

    for key in ("keep.txt", "flaky.txt"):
        put(settings_env, "kb1", key)
    tick = Tick()
    tick.sync()
    real_list = objects.LocalFolderStore.list_objects

    def flaky_listing(self, kb, start_after=None):  # fault injection: the listing drops an object
        return (info for info in real_list(self, kb, start_after) if info.key != "flaky.txt")

    monkeypatch.setattr(objects.LocalFolderStore, "list_objects", flaky_listing)
    result = tick.sync()
    assert not result.run_requests
    assert catalog_rows("kb1")["flaky.txt"]["missing_passes"] == 1
    monkeypatch.setattr(objects.LocalFolderStore, "list_objects", real_list)
    tick.sync()
    assert catalog_rows("kb1")["flaky.txt"]["missing_passes"] == 0
    assert catalog_rows("kb1")["flaky.txt"]["status"] == "ingested" and all_points("kb1")["flaky.txt"]

    # Missed twice in a row but still there on a direct HEAD: kept as well.
    monkeypatch.setattr(objects.LocalFolderStore, "list_objects", flaky_listing)
    tick.sync()
    tick.sync()
    assert catalog_rows("kb1")["flaky.txt"]["status"] == "ingested" and all_points("kb1")["flaky.txt"]


def test_dry_run_reports_what_would_be_pruned(settings_env, monkeypatch):
    monkeypatch.setenv("QUIVR_SYNC_DELETE_DRY_RUN", "true")
    monkeypatch.setenv("QUIVR_SYNC_DELETE_AFTER_MISSES", "1")
    put(settings_env, "kb1", "gone.txt")
    tick = Tick()
    tick.sync()
    (settings_env.inbox_dir / "kb1" / "gone.txt").unlink()
    tick.sync()
    run = tick.instance.get_runs(dg.RunsFilter(job_name="prune_documents_job"))[0]
    materialization = tick.instance.get_latest_materialization_event(dg.AssetKey("pruned_documents"))
    metadata = materialization.asset_materialization.metadata
    assert run.is_success and metadata["dry_run"].value is True and metadata["deleted"].value == 1
    assert catalog_rows("kb1")["gone.txt"]["status"] == "ingested" and all_points("kb1")["gone.txt"]


def test_a_budget_smaller_than_the_deployment_reaches_every_kb(settings_env, monkeypatch):
    """Each tick lists at most 4 objects; ten KBs of 3 documents each need 8 ticks a pass, and
    every KB must be listed in turn (starting each tick from the first KB starved the others)."""
    monkeypatch.setenv("QUIVR_SYNC_OBJECTS_PER_TICK", "4")
    for kb in range(10):
        for i in range(3):
            put(settings_env, f"kb{kb}", f"doc-{i}.txt", data=f"Document {i} of KB {kb}.\n".encode())
    tick = Tick()
    requested: set[str] = set()
    for _ in range(8):
        result = tick.evaluate()
        requested |= {r.partition_key for r in result.run_requests}
    assert requested == {f"kb{kb}" for kb in range(10)}
    assert all(n >= 1 for n in json.loads(tick.cursor)["passes"].values())
    assert len(json.loads(tick.cursor)["passes"]) == 10
