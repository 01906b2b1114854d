"""Compare an object-store listing with the catalog: what is new, changed, unchanged or missing.

Cheap by design: one listing and one catalog query per KB, no object is read. A changed etag
only nominates a document; the pipeline then compares sha256 before parsing anything.
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
    etags: dict[str, str] = field(default_factory=dict)
    listed_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def to_ingest(self) -> list[str]:
        return self.new + self.changed + self.retry


def plan_kb(store: ObjectStore, db: Database, kb: str, fingerprint: str | None = None,
            request_timeout: timedelta | None = None) -> SyncPlan:
    """With `request_timeout`, documents already requested (same etag) less than that long ago
    count as in flight and are not planned again."""
    plan = SyncPlan(kb=kb)
    known = repository.get_documents(db, kb)
    now = datetime.now(timezone.utc)
    seen = set()
    for info in store.list_objects(kb):
        seen.add(info.key)
        plan.listed_bytes[info.key] = info.size
        plan.etags[info.key] = info.etag
        row = known.get(info.key)
        if (request_timeout is not None and row is not None and row["requested_etag"] == info.etag
                and row["requested_at"] is not None and now - row["requested_at"] < request_timeout
                and (row["status"] == "pending" or row["etag"] != info.etag)):
            plan.in_flight += 1
        elif row is None or row["status"] in ("deleted", "pending"):
            plan.new.append(info.key)
        elif row["etag"] != info.etag:
            plan.changed.append(info.key)
        elif row["status"] == "ingested" and fingerprint and row["embedding_model"] != fingerprint:
            plan.changed.append(info.key)
        elif row["status"] == "failed" and row["error_type"] in TRANSIENT_ERRORS:
            plan.retry.append(info.key)
        else:
            plan.unchanged += 1
    plan.missing = sorted(k for k, row in known.items() if k not in seen and row["status"] != "deleted")
    return plan
