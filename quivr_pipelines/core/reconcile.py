"""Full reconciliation of one KB: object store vs catalog vs Qdrant, repairing the drift.

- points of documents the catalog does not hold as ingested (orphans) are deleted;
- documents the catalog holds as ingested whose points are missing or incomplete are reset to
  pending, so the next sync re-ingests them;
- documents ingested but absent from the store, and objects unknown to the catalog, are only
  reported: the sync handles both (deletion after repeated misses, ingestion of new objects).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quivr_pipelines.core.catalog import repository
from quivr_pipelines.core.catalog.database import Database
from quivr_pipelines.core.errors import DocumentStatus
from quivr_pipelines.core.objects import ObjectStore


@dataclass
class Reconciliation:
    kb: str
    objects: int = 0
    ingested: int = 0
    points: int = 0
    orphan_points_deleted: list[str] = field(default_factory=list)
    reset_for_reingestion: list[str] = field(default_factory=list)
    not_in_store: list[str] = field(default_factory=list)
    not_in_catalog: list[str] = field(default_factory=list)

    @property
    def drift(self) -> int:
        return (len(self.orphan_points_deleted) + len(self.reset_for_reingestion)
                + len(self.not_in_store) + len(self.not_in_catalog))


def reconcile_kb(store: ObjectStore, vectors, db: Database, kb: str, repair: bool = True) -> Reconciliation:
    result = Reconciliation(kb=kb)
    listed = {info.key for info in store.list_objects(kb)}
    rows = repository.get_documents(db, kb)
    collection = vectors.resolve_alias(kb)
    counts = vectors.chunk_counts(collection, kb) if collection else {}
    ingested = {key: row for key, row in rows.items() if row["status"] == DocumentStatus.INGESTED}
    result.objects, result.ingested, result.points = len(listed), len(ingested), sum(counts.values())
    result.orphan_points_deleted = sorted(key for key in counts if key not in ingested)
    result.reset_for_reingestion = sorted(
        key for key, row in ingested.items() if counts.get(key, 0) != row["chunk_count"] and key in listed)
    result.not_in_store = sorted(key for key in ingested if key not in listed)
    result.not_in_catalog = sorted(key for key in listed if key not in rows)
    if repair:
        if result.orphan_points_deleted:
            vectors.delete_documents(collection, kb, result.orphan_points_deleted)
        repository.reset_to_pending(db, kb, result.reset_for_reingestion)
    return result
