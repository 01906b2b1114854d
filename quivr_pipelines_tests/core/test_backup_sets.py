"""Backup sets and their retention, in both artifact stores (a folder, S3 over HTTP)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from quivr_pipelines.core.artifacts import LocalArtifactStore, S3ArtifactStore
from quivr_pipelines.core.backups.sets import (
    COMPLETE,
    FAILED,
    SetManifest,
    apply_retention,
    latest_complete,
    list_sets,
    new_set_id,
    plan_retention,
    read_manifest,
    set_prefix,
    write_manifest,
)

KEEP = {"catalog": timedelta(days=30), "vectors": timedelta(days=14), "config": timedelta(days=90)}
NOW = datetime.now(UTC) + timedelta(days=400)  # later than any file's real modification time


@pytest.fixture(params=["local", "s3"])
def artifacts(request, tmp_path):
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    server, bucket = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket")
    return S3ArtifactStore(boto3.client("s3", endpoint_url=server, region_name="us-east-1"), bucket,
                           prefix=f"sets-{tmp_path.name}")


def make_set(artifacts, days_old: float, status: str = COMPLETE) -> SetManifest:
    created = NOW - timedelta(days=days_old)
    set_id = new_set_id(created)
    components = {}
    for name in ("catalog", "vectors", "config"):
        key = f"{set_prefix(set_id)}{name}/part.bin"
        with artifacts.open_write(key) as out:
            out.write(name.encode() * 100)
        components[name] = {"files": [{"key": key, "size": len(name) * 100, "sha256": "-"}]}
    manifest = SetManifest(id=set_id, created_at=created, status=status, components=components,
                           aliases={"kb": "kb_kb__local__g1"}, generations={"kb": 1})
    write_manifest(artifacts, manifest)
    return manifest


def keys(artifacts) -> set[str]:
    return {info.key for info in artifacts.list("backups/")}


def test_set_ids_sort_in_time_and_manifests_round_trip(artifacts):
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", new_set_id())
    older, newer = make_set(artifacts, 3), make_set(artifacts, 1)
    assert [s.id for s in list_sets(artifacts)] == [older.id, newer.id]
    assert read_manifest(artifacts, newer.id).to_dict() == newer.to_dict()
    assert latest_complete(list_sets(artifacts)).id == newer.id


def test_retention_expires_components_by_age_then_whole_sets(artifacts):
    fresh, mid, old, ancient = (make_set(artifacts, d) for d in (1, 20, 60, 120))
    plan = plan_retention(artifacts, KEEP, now=NOW)
    by_set = {(e.set_id, e.component) for e in plan}
    assert by_set == {(mid.id, "vectors"), (old.id, "vectors"), (old.id, "catalog"), (ancient.id, None)}
    assert all(e.bytes > 0 and e.reason for e in plan)
    before = keys(artifacts)
    assert apply_retention(artifacts, [], now=NOW) == 0 and keys(artifacts) == before  # a dry run deletes nothing

    freed = apply_retention(artifacts, plan, now=NOW)
    assert freed == sum(e.bytes for e in plan)
    assert [s.id for s in list_sets(artifacts)] == [old.id, mid.id, fresh.id]  # oldest first
    assert read_manifest(artifacts, mid.id).live_components() == ["catalog", "config"]
    assert read_manifest(artifacts, old.id).live_components() == ["config"]
    assert not any(k.startswith(set_prefix(ancient.id)) for k in keys(artifacts))
    assert plan_retention(artifacts, KEEP, now=NOW) == []  # applied: nothing more to do


def test_the_newest_complete_set_is_kept_whatever_its_age(artifacts):
    newest_complete = make_set(artifacts, 200)
    failed = make_set(artifacts, 100, status=FAILED)  # newer, but failed: it does not count
    plan = plan_retention(artifacts, KEEP, now=NOW)
    assert {e.set_id for e in plan} == {failed.id}
    apply_retention(artifacts, plan, now=NOW)
    assert [s.id for s in list_sets(artifacts)] == [newest_complete.id]
    assert len(read_manifest(artifacts, newest_complete.id).live_components()) == 3


def test_an_unfinished_run_is_removed_once_old_and_a_component_without_an_age_is_kept(artifacts):
    make_set(artifacts, 1)
    orphan = f"{set_prefix(new_set_id(NOW - timedelta(days=500)))}catalog/part.bin"
    with artifacts.open_write(orphan) as out:
        out.write(b"half a dump")
    plan = plan_retention(artifacts, {"catalog": timedelta(days=30)}, now=NOW)
    assert [(e.component, e.keys, e.reason) for e in plan] == [(None, (orphan,), "an unfinished backup run (no manifest)")]
    # the real files are minutes old: at the real time, the unfinished run is too young to judge
    assert plan_retention(artifacts, KEEP) == []
    apply_retention(artifacts, plan, now=NOW)
    assert artifacts.head(orphan) is None


def test_a_failed_run_with_nothing_in_it_goes_once_old(artifacts):
    make_set(artifacts, 1)
    failed = SetManifest(id=new_set_id(NOW - timedelta(days=200)), created_at=NOW - timedelta(days=200),
                         status=FAILED, errors=["BackupError: pg_dump failed"])
    write_manifest(artifacts, failed)
    plan = plan_retention(artifacts, KEEP, now=NOW)
    assert [(e.set_id, e.component, e.reason) for e in plan] == [(failed.id, None, "a failed backup run")]
    apply_retention(artifacts, plan, now=NOW)
    assert failed.id not in {s.id for s in list_sets(artifacts)}
