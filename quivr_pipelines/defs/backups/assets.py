"""The backup assets, their check, job and schedule (see the package docstring)."""


import os
from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from quivr_pipelines.core.backups.backup_set import BackupContext, describe, project_root, take_backup_set
from quivr_pipelines.core.backups.sets import apply_retention, latest_complete, list_sets, plan_retention
from quivr_pipelines.resources import BackupResource, DatabaseResource, VectorStoreResource
from quivr_pipelines.settings import get_settings

GROUP = "backups"


@dg.asset(group_name=GROUP, kinds={"postgres", "qdrant"},
          description="One backup set: the catalog (pg_dump) and every collection, taken consistently, "
                      "checksummed, optionally age-encrypted, in the artifact store.")
def backup_set(context: dg.AssetExecutionContext, backups: BackupResource, database: DatabaseResource,
               vector_store: VectorStoreResource) -> dg.MaterializeResult:
    store = vector_store.get()
    if not hasattr(store, "copy_collection"):
        raise dg.Failure("backups of a Qdrant server's collections are not supported yet: take its snapshots "
                         "with Qdrant's own API (the embedded engine is backed up here)")
    ctx = BackupContext(db=database.get(), vectors=store, artifacts=backups.get(), recipients=backups.recipients(),
                        project_root=project_root(), environ=dict(os.environ), say=context.log.info)
    manifest = take_backup_set(ctx)
    line = describe(manifest)
    vectors = manifest.components["vectors"]
    return dg.MaterializeResult(metadata={
        "set_id": manifest.id, "encrypted": manifest.encrypted,
        "stored_mb": dg.MetadataValue.json({k: round(v / 1e6, 3) for k, v in line["components"].items()}),
        "collections": len(vectors["collections"]),
        "points": sum(c["points"] for c in vectors["collections"]),
        "catalog_rows": sum(manifest.components["catalog"]["tables"].values()),
        "writers_held_seconds": vectors.get("writers_held_seconds", 0.0),
        "aliases": dg.MetadataValue.json(manifest.aliases), "manifest": backups.get().uri(f"backups/{manifest.id}/manifest.json")})


@dg.asset_check(asset=backup_set, blocking=False,
                description="The newest complete backup set is younger than QUIVR_BACKUP_MAX_AGE_HOURS.")
def check_backup_recent(backups: BackupResource) -> dg.AssetCheckResult:
    newest = latest_complete(list_sets(backups.get()))
    if newest is None:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                   description="no complete backup set yet")
    age_hours = (datetime.now(UTC) - newest.created_at).total_seconds() / 3600
    passed = age_hours <= backups.max_age_hours
    return dg.AssetCheckResult(
        passed=passed, severity=dg.AssetCheckSeverity.ERROR,
        description=f"newest complete set {newest.id} is {age_hours:.1f} h old"
                    + ("" if passed else f", older than the allowed {backups.max_age_hours:g} h"),
        metadata={"set_id": newest.id, "age_hours": round(age_hours, 2), "max_age_hours": backups.max_age_hours})


class RetentionConfig(dg.Config):
    dry_run: bool = Field(default=False, description="Only list what would be deleted.")


@dg.asset(group_name=GROUP, deps=[backup_set],
          description="Backup files past their retention (QUIVR_BACKUP_KEEP_*_DAYS) deleted; the newest complete "
                      "set is always kept.")
def backup_retention(context: dg.AssetExecutionContext, config: RetentionConfig,
                     backups: BackupResource) -> dg.MaterializeResult:
    artifacts = backups.get()
    plan = plan_retention(artifacts, backups.keep())
    for expiry in plan:
        context.log.info(f"{'would delete' if config.dry_run else 'deleting'} {expiry.set_id} "
                         f"{expiry.component or 'whole set'} ({expiry.bytes / 1e6:.2f} MB): {expiry.reason}")
    freed = 0 if config.dry_run else apply_retention(artifacts, plan)
    return dg.MaterializeResult(metadata={
        "dry_run": config.dry_run, "expired": len(plan), "freed_mb": round(freed / 1e6, 3),
        "sets_kept": len(list_sets(artifacts)),
        "expired_items": dg.MetadataValue.json([{"set": e.set_id, "component": e.component, "reason": e.reason}
                                                for e in plan][:200])})


backup_job = dg.define_asset_job("backup_job", selection=dg.AssetSelection.assets(backup_set, backup_retention),
                                 description="Take a backup set, then apply the retention.")

backup_schedule = dg.ScheduleDefinition(
    name="backup_schedule", job=backup_job, cron_schedule=get_settings().backup_cron,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily by default (QUIVR_BACKUP_CRON): a backup set, then the retention.")
