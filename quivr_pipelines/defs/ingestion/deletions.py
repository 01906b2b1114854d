"""`pruned_documents`: documents gone from the object store leave Qdrant and the catalog.

Requested by `object_store_sensor` once documents have been missed by
QUIVR_SYNC_DELETE_AFTER_MISSES consecutive listing passes; each is confirmed gone with a direct
HEAD first. Their dynamic partitions are removed too.
"""

import dagster as dg

from quivr_pipelines.core.catalog import repository
from quivr_pipelines.core.deletion import prune_missing
from quivr_pipelines.core.keys import partition_key
from quivr_pipelines.defs.ingestion.partitions import documents_partitions
from quivr_pipelines.resources import DatabaseResource, ObjectStoreResource, VectorStoreResource

PRUNE_JOB_NAME = "prune_documents_job"


@dg.asset(
    group_name="ingestion",
    kinds={"qdrant", "postgres"},
    deps=["indexed_documents"],
    description="Documents deleted from the object store, removed from Qdrant and the catalog.",
)
def pruned_documents(
    context: dg.AssetExecutionContext,
    object_store: ObjectStoreResource,
    vector_store: VectorStoreResource,
    database: DatabaseResource,
) -> dg.MaterializeResult:
    settings = object_store.settings
    db = database.get()
    deleted, kept = {}, {}
    for kb in repository.kb_names(db):
        result = prune_missing(object_store.get(), vector_store.get(), db, kb,
                               settings.sync_delete_after_misses, dry_run=settings.sync_delete_dry_run)
        if result.deleted:
            deleted[kb] = result.deleted
        if result.still_present:
            kept[kb] = result.still_present
    partitions = [partition_key(kb, key) for kb, keys in deleted.items() for key in keys]
    if partitions and not settings.sync_delete_dry_run:
        existing = set(context.instance.get_dynamic_partitions(documents_partitions.name))
        for key in partitions:
            if key in existing:
                context.instance.delete_dynamic_partition(documents_partitions.name, key)
    verb = "would delete" if settings.sync_delete_dry_run else "deleted"
    context.log.info(f"{verb} {len(partitions)} documents; {sum(map(len, kept.values()))} were listed again")
    return dg.MaterializeResult(metadata={
        "dry_run": settings.sync_delete_dry_run,
        "deleted": len(partitions),
        "back_in_store": sum(map(len, kept.values())),
        "documents": dg.MetadataValue.json({kb: keys[:200] for kb, keys in deleted.items()}),
    })


prune_documents_job = dg.define_asset_job(PRUNE_JOB_NAME, selection=[pruned_documents])
