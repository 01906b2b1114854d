"""`pruned_documents`: documents gone from the object store leave Qdrant and the catalog.

Requested by `object_store_sensor` once documents have been missed by
QUIVR_SYNC_DELETE_AFTER_MISSES consecutive listing passes; each is confirmed gone with a direct
HEAD first. Launched from the UI, `PruneConfig` chooses a dry run or another number of passes.
"""

import dagster as dg
from pydantic import Field

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
    for kb in repository.kb_names(db):
        result = prune_missing(object_store.get(), vector_store.get(), db, kb, passes, dry_run=dry_run)
        if result.deleted:
            deleted[kb] = result.deleted
        if result.still_present:
            kept[kb] = result.still_present
    count = sum(map(len, deleted.values()))
    verb = "would delete" if dry_run else "deleted"
    context.log.info(f"{verb} {count} documents; {sum(map(len, kept.values()))} were listed again")
    return dg.MaterializeResult(metadata={
        "dry_run": dry_run,
        "deleted": count,
        "back_in_store": sum(map(len, kept.values())),
        "documents": dg.MetadataValue.json({kb: keys[:200] for kb, keys in deleted.items()}),
    })

