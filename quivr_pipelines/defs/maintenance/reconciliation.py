"""`kb_reconciliation`: a full comparison of object store, catalog and Qdrant, with repairs.

For KBs that need more than incremental sync (a store written by other tools, a restored
collection, an interrupted migration). Runs daily (`kb_reconciliation_schedule`) or on demand;
the drift it found and repaired is in the materialization metadata.
"""

import dagster as dg

from quivr_pipelines.core.catalog import repository
from quivr_pipelines.core.reconcile import reconcile_kb
from quivr_pipelines.resources import DatabaseResource, ObjectStoreResource, VectorStoreResource


@dg.asset(
    group_name="maintenance",
    kinds={"qdrant", "postgres"},
    deps=["indexed_documents"],
    description="Catalog vs object store vs Qdrant for every KB; orphan points deleted, "
                "documents with missing points queued for re-ingestion.",
)
def kb_reconciliation(
    context: dg.AssetExecutionContext,
    object_store: ObjectStoreResource,
    vector_store: VectorStoreResource,
    database: DatabaseResource,
) -> dg.MaterializeResult:
    db = database.get()
    report = {}
    for kb in repository.kb_names(db):
        result = reconcile_kb(object_store.get(), vector_store.get(), db, kb)
        report[kb] = {
            "objects": result.objects, "ingested": result.ingested, "points": result.points,
            "orphan_points_deleted": len(result.orphan_points_deleted),
            "reset_for_reingestion": len(result.reset_for_reingestion),
            "not_in_store": len(result.not_in_store), "not_in_catalog": len(result.not_in_catalog),
            "examples": (result.orphan_points_deleted + result.reset_for_reingestion
                         + result.not_in_store + result.not_in_catalog)[:20],
        }
        context.log.info(f"{kb}: {report[kb]}")
    return dg.MaterializeResult(metadata={
        "knowledge_bases": len(report),
        "drift": sum(r["orphan_points_deleted"] + r["reset_for_reingestion"] + r["not_in_store"]
                     + r["not_in_catalog"] for r in report.values()),
        "repaired": sum(r["orphan_points_deleted"] + r["reset_for_reingestion"] for r in report.values()),
        "report": dg.MetadataValue.json(report),
    })

