"""`backup_job` in a real Dagster instance: the set's materialization, the retention after it, and
`check_backup_recent` before any backup, after one, and with a set that is too old."""

from __future__ import annotations

import dagster as dg

from quivr_pipelines.core.artifacts import build_artifact_store
from quivr_pipelines.core.backups.sets import list_sets
from quivr_pipelines.defs.backups.assets import backup_retention, backup_set, check_backup_recent
from quivr_pipelines.resources import resources_from_settings
from quivr_pipelines.settings import get_settings
from quivr_pipelines_tests.conftest import DOCS
from quivr_pipelines_tests.helpers import ingest


def check_result(instance, resources) -> dg.AssetCheckEvaluation:
    result = dg.materialize([backup_set, check_backup_recent], instance=instance, resources=resources,
                            selection=dg.AssetSelection.checks(check_backup_recent), raise_on_error=False)
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_backup_job_materializes_a_set_and_its_check_follows_its_age(settings_env, monkeypatch):
    folder = settings_env.inbox_dir / "handbook"
    folder.mkdir(parents=True)
    (folder / "norwich.txt").write_text((DOCS / "norwich-city.txt").read_text()[:3000])
    _, instance = ingest()
    resources = resources_from_settings(get_settings())

    before = check_result(instance, resources)
    assert not before.passed and "no complete backup set" in before.description

    result = dg.materialize([backup_set, backup_retention], instance=instance, resources=resources)
    assert result.success
    metadata = result.asset_materializations_for_node("backup_set")[0].metadata
    (only,) = list_sets(build_artifact_store(get_settings()))
    assert metadata["set_id"].value == only.id and metadata["collections"].value == 1
    assert metadata["points"].value > 0 and metadata["catalog_rows"].value > 0
    retention = result.asset_materializations_for_node("backup_retention")[0].metadata
    assert retention["expired"].value == 0 and retention["sets_kept"].value == 1

    assert check_result(instance, resources).passed
    monkeypatch.setenv("QUIVR_BACKUP_MAX_AGE_HOURS", "0.00001")
    stale = check_result(instance, resources_from_settings(get_settings()))
    assert not stale.passed and "older than the allowed" in stale.description
