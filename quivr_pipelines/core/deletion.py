"""Remove documents that left the object store: points first, then the catalog row.

Only documents missed by `min_passes` consecutive listing passes are candidates, and each one
is checked once more with a direct HEAD before anything is deleted, so a flaky or partial
listing never wipes a knowledge base.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quivr_pipelines.core import generations, reembed
from quivr_pipelines.core.catalog import repository
from quivr_pipelines.core.catalog.database import Database
from quivr_pipelines.core.errors import IngestionError
from quivr_pipelines.core.objects import ObjectStore


@dataclass
class PruneResult:
    kb: str
    deleted: list[str] = field(default_factory=list)
    still_present: list[str] = field(default_factory=list)
    dry_run: bool = False


def prune_missing(store: ObjectStore, vectors, db: Database, kb: str, min_passes: int,
                  dry_run: bool = False) -> PruneResult:
    result = PruneResult(kb=kb, dry_run=dry_run)
    for key in repository.confirmed_missing(db, kb, min_passes):
        try:
            present = store.head(kb, key) is not None
        except IngestionError:  # a hostile key: it cannot be in the store
            present = False
        (result.still_present if present else result.deleted).append(key)
    if result.still_present:
        repository.count_missing(db, kb, [], result.still_present)
    if result.deleted and not dry_run:
        # Under the KB's write lock, from the serving collection and a building generation's
        # alike: a re-embedding in progress never brings a deleted document back at its swap.
        with generations.kb_write_lock(db, kb):
            for collection in reembed.live_collections(db, vectors, kb):
                vectors.delete_documents(collection, kb, result.deleted)
            repository.mark_deleted(db, kb, result.deleted)
    return result
