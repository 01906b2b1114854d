"""Compare an object-store listing with the catalog: what is new, changed, unchanged or missing.

Cheap by design: no object is read. A changed etag (or version, or size) only nominates a
document; the pipeline then compares sha256 before parsing anything, so an etag that is not a
content hash (multipart uploads, a local file's mtime) never causes a re-embedding.

Listing is done in passes over the key space, in key order, resumable: `plan_kb(after=...,
max_objects=...)` covers the keys after `after`, up to a budget, and says where to resume
(`next_after`), or that the pass is complete. The catalog is read for exactly the same key range,
so documents missing from the store are detected range by range, and a prefix of any size is
covered in bounded steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from quivr_pipelines.core.catalog import repository
from quivr_pipelines.core.catalog.database import Database
from quivr_pipelines.core.objects import ObjectStore
from quivr_pipelines.core.pipeline import TRANSIENT_ERRORS


@dataclass
class SyncPlan:
    kb: str
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    retry: list[str] = field(default_factory=list)
    unchanged: int = 0
    in_flight: int = 0
    missing: list[str] = field(default_factory=list)
    seen_again: list[str] = field(default_factory=list)  # were missing, listed again
    etags: dict[str, str] = field(default_factory=dict)
    listed_bytes: dict[str, int] = field(default_factory=dict)
    listed: int = 0
    next_after: str | None = None  # None: this pass reached the end of the KB

    @property
    def to_ingest(self) -> list[str]:
        return self.new + self.changed + self.retry


def plan_kb(store: ObjectStore, db: Database, kb: str, fingerprint: str | None = None,
            request_timeout: timedelta | None = None, after: str | None = None,
            max_objects: int | None = None) -> SyncPlan:
    """With `request_timeout`, documents already requested (same etag) less than that long ago
    count as in flight and are not planned again."""
    plan = SyncPlan(kb=kb)
    now = datetime.now(timezone.utc)
    listing = []
    for info in store.list_objects(kb, start_after=after):
        listing.append(info)
        if max_objects and len(listing) >= max_objects:
            plan.next_after = info.key
            break
    plan.listed = len(listing)
    known = repository.get_documents_in_range(db, kb, after, plan.next_after)
    seen = set()
    for info in listing:
        seen.add(info.key)
        plan.listed_bytes[info.key] = info.size
        plan.etags[info.key] = info.etag
        row = known.get(info.key)
        if row is not None and row["missing_passes"]:
            plan.seen_again.append(info.key)
        if (request_timeout is not None and row is not None and row["requested_etag"] == info.etag
                and row["requested_at"] is not None and now - row["requested_at"] < request_timeout
                and (row["status"] == "pending" or row["etag"] != info.etag)):
            plan.in_flight += 1
        elif row is None or row["status"] in ("deleted", "pending"):
            plan.new.append(info.key)
        elif row["etag"] != info.etag or (row["size_bytes"] is not None and row["size_bytes"] != info.size):
            plan.changed.append(info.key)
        elif row["status"] == "ingested" and fingerprint and row["embedding_model"] != fingerprint:
            plan.changed.append(info.key)
        elif row["status"] == "failed" and row["error_type"] in TRANSIENT_ERRORS:
            plan.retry.append(info.key)
        else:
            plan.unchanged += 1
    plan.missing = sorted(k for k, row in known.items() if k not in seen and row["status"] != "deleted")
    return plan
