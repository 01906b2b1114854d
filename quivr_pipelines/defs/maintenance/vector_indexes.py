"""`vector_indexes`: build the HNSW index of every KB collection, off the ingestion path.

The embedded engine indexes only when asked, and a build takes minutes at 100k points, so
ingestion runs never do it; this asset does, on a nightly schedule or on demand. It builds each
index on a copy of the shard and swaps it in (`EmbeddedStore.rebuild_index`): queries keep being
answered throughout (they wait only for the copy and the swap), writes to that collection wait
for its build. A Qdrant server indexes by itself: there the asset only reports point counts.
"""

import dagster as dg

from quivr_pipelines.resources import VectorStoreResource


@dg.asset(
    group_name="maintenance",
    kinds={"qdrant"},
    deps=["indexed_documents"],
    description="Every KB collection with its vector index built (embedded engine: on a copy swapped in, "
                "queries keep being answered; writes to a collection wait for its build) and its size.",
)
def vector_indexes(context: dg.AssetExecutionContext, vector_store: VectorStoreResource) -> dg.MaterializeResult:
    store = vector_store.get()
    by_collection = {}
    for collection in store.list_collections():
        rebuild = getattr(store, "rebuild_index", None)  # the embedded engine (imported lazily, as the resource does)
        if rebuild is not None:
            report = rebuild(collection)
            row = {"points": report.points, "rebuilt": report.rebuilt,
                   "build_seconds": round(report.build_seconds, 2),
                   "queries_paused_seconds": round(report.copy_seconds + report.swap_seconds, 2),
                   "writes_held_seconds": round(report.writes_held_seconds, 2)}
        else:
            changed = store.optimize(collection)
            info = store.collection_info(collection)
            row = {"points": info.points if info else 0, "rebuilt": changed}
        by_collection[collection] = row
        context.log.info(f"{collection}: {row}")
    return dg.MaterializeResult(metadata={
        "collections": len(by_collection),
        "points": sum(row["points"] for row in by_collection.values()),
        "rebuilt": sum(row["rebuilt"] for row in by_collection.values()),
        "build_seconds": round(sum(row.get("build_seconds", 0.0) for row in by_collection.values()), 2),
        "points_by_collection": dg.MetadataValue.json({name: row["points"] for name, row in by_collection.items()}),
        "by_collection": dg.MetadataValue.json(by_collection),
    })
