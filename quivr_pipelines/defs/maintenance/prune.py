"""`pruned_documents`: documents gone from the object store leave Qdrant and the catalog.

Requested by `object_store_sensor` once documents have been missed by
QUIVR_SYNC_DELETE_AFTER_MISSES consecutive listing passes; each is confirmed gone with a direct
HEAD first. Launched from the UI, `PruneConfig` chooses a dry run or another number of passes.
A run that is not a dry run leaves one `admin_audit` row (actor "dagster run <run id>").
"""

import dagster as dg
from pydantic import Field

from quivr_pipelines.core import audit
from quivr_pipelines.core.catalog import repository
from quivr_pipelines.core.deletion import prune_missing
from quivr_pipelines.resources import DatabaseResource, ObjectStoreResource, SyncResource, VectorStoreResource


class PruneConfig(dg.Config):
    dry_run: bool | None = Field(
        default=None, description="Only report what would be deleted. Unset: QUIVR_SYNC_DELETE_DRY_RUN.")
    min_missed_passes: int | None = Field(
        default=None, ge=1, description="Passes a document must have been missed by. Unset: "
                                        "QUIVR_SYNC_DELETE_AFTER_MISSES.")


@dg.asset(
    group_name="maintenance",
    kinds={"qdrant", "postgres"},
    deps=["indexed_documents"],
    description="Documents deleted from the object store, removed from Qdrant and the catalog.",
)
def pruned_documents(
    context: dg.AssetExecutionContext,
    config: PruneConfig,
    object_store: ObjectStoreResource,
    vector_store: VectorStoreResource,
    database: DatabaseResource,
    sync: SyncResource,
) -> dg.MaterializeResult:
    dry_run = sync.delete_dry_run if config.dry_run is None else config.dry_run
    passes = config.min_missed_passes or sync.delete_after_misses
    db = database.get()
    deleted, kept = {}, {}
    try:
        for kb in repository.kb_names(db):
            result = prune_missing(object_store.get(), vector_store.get(), db, kb, passes, dry_run=dry_run)
            if result.deleted:
                deleted[kb] = result.deleted
            if result.still_present:
                kept[kb] = result.still_present
    except Exception as exc:
        if not dry_run:  # what was deleted before the failure is still worth a row
            _audit(db, context.run.run_id, "failed", deleted, passes, error_type=type(exc).__name__)
        raise
    if not dry_run:
        _audit(db, context.run.run_id, "ok", deleted, passes)
    count = sum(map(len, deleted.values()))
    verb = "would delete" if dry_run else "deleted"
    context.log.info(f"{verb} {count} documents; {sum(map(len, kept.values()))} were listed again")
    return dg.MaterializeResult(metadata={
        "dry_run": dry_run,
        "deleted": count,
        "back_in_store": sum(map(len, kept.values())),
        "documents": dg.MetadataValue.json({kb: keys[:200] for kb, keys in deleted.items()}),
    })



def _audit(db, run_id: str, outcome: str, deleted: dict[str, list[str]], passes: int, **extra) -> None:
    audit.record(db, actor=audit.run_actor(run_id), action="prune", target="all KBs",
                 outcome=outcome, detail={"deleted": {kb: len(keys) for kb, keys in deleted.items()},
                                          "min_missed_passes": passes, **extra})
