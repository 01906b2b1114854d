"""`vector_indexes`: build the HNSW index of every KB collection, off the ingestion path.

The embedded engine indexes only when asked and blocks queries while it does (minutes at 100k
points), so ingestion runs never do it; this asset does, on a nightly schedule or on demand.
A Qdrant server indexes by itself: there the asset only reports point counts.
"""

import dagster as dg

from quivr_pipelines.resources import VectorStoreResource


@dg.asset(
    group_name="maintenance",
    kinds={"qdrant"},
    deps=["indexed_documents"],
    description="Every KB collection with its vector index built (embedded engine) and its size.",
)
def vector_indexes(context: dg.AssetExecutionContext, vector_store: VectorStoreResource) -> dg.MaterializeResult:
    store = vector_store.get()
    sizes = {}
    for collection in store.list_collections():
        changed = store.optimize(collection)
        info = store.collection_info(collection)
        sizes[collection] = info.points if info else 0
        context.log.info(f"{collection}: {sizes[collection]} points, index rebuilt: {changed}")
    return dg.MaterializeResult(metadata={
        "collections": len(sizes),
        "points": sum(sizes.values()),
        "points_by_collection": dg.MetadataValue.json(sizes),
    })

