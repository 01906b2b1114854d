"""Compare an object-store listing with the catalog: what is new, changed, unchanged or missing.

Cheap by design: no object is read. A changed etag (or version, or size) only nominates a
document; the pipeline then compares sha256 before parsing anything, so an etag that is not a
content hash (multipart uploads, a local file's mtime) never causes a re-embedding.

A change of embedding model is not a sync concern: re-embedding a KB builds a new collection
generation (its own job), so the sync compares only the objects themselves. A change of the KB's
PII mode is: the stored texts themselves change (masked or not), so a document ingested under
another mode than the KB's current one is planned as changed.

Listing is done in passes over the key space, in key order, resumable: `plan_kb(after=...,
max_objects=...)` covers the keys after `after`, up to a budget, and says where to resume
(`next_after`), or that the pass is complete. The catalog is read for exactly the same key range,
so documents missing from the store are detected range by range, and a prefix of any size is
covered in bounded steps.

Refused objects (`ObjectInfo.refused`: a hostile name, a link, a special file) are never planned
into a run: the sync records each one as failed `hostile_key` under its escaped name, once per
version, and the rest of the KB goes on (one odd name used to abort the whole sync). Listing goes
in raw key byte order while the catalog holds escaped names, whose order differs: a budgeted
window therefore always ends on an ordinary key, and the rows of the escaped keys it listed are
read by name. An escaped row whose name sorts into another window may be counted missed once; the
prune HEAD-checks it before deleting anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from quivr_pipelines.core import events
from quivr_pipelines.core.catalog import repository
from quivr_pipelines.core.catalog.database import Database
from quivr_pipelines.core.catalog.repository import DocumentRecord, KbConfig
from quivr_pipelines.core.errors import TRANSIENT_ERRORS, DocumentStatus, ErrorType
from quivr_pipelines.core.keys import is_escaped
from quivr_pipelines.core.objects import ObjectInfo, ObjectStore


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
    refused: dict[str, ObjectInfo] = field(default_factory=dict)  # to record as hostile_key now
    etags: dict[str, str] = field(default_factory=dict)
    listed_bytes: dict[str, int] = field(default_factory=dict)
    listed: int = 0
    next_after: str | None = None  # None: this pass reached the end of the KB

    @property
    def to_ingest(self) -> list[str]:
        return self.new + self.changed + self.retry


def plan_kb(store: ObjectStore, db: Database, kb: str,
            request_timeout: timedelta | None = None, after: str | None = None,
            max_objects: int | None = None) -> SyncPlan:
    """With `request_timeout`, documents already requested (same etag) less than that long ago
    count as in flight and are not planned again."""
    plan = SyncPlan(kb=kb)
    now = datetime.now(UTC)
    listing = []
    for info in store.list_objects(kb, start_after=after):
        listing.append(info)
        if max_objects and len(listing) >= max_objects and not is_escaped(info.key):
            plan.next_after = info.key  # an ordinary key: its raw and catalog orders agree
            break
    plan.listed = len(listing)
    known = repository.get_documents_in_range(db, kb, after, plan.next_after)
    escaped = [info.key for info in listing if is_escaped(info.key) and info.key not in known]
    if escaped:  # their catalog names may sort outside this window's range
        known.update(repository.get_documents(db, kb, escaped))
    pii_mode = _kb_pii_mode(db, kb)
    seen = set()
    for info in listing:
        seen.add(info.key)
        row = known.get(info.key)
        if row is not None and row["missing_passes"]:
            plan.seen_again.append(info.key)
        if info.refused is not None and not (row is not None and row["status"] == DocumentStatus.INGESTED):
            if (row is not None and row["status"] == DocumentStatus.FAILED
                    and row["error_type"] == ErrorType.HOSTILE_KEY and row["etag"] == info.etag):
                plan.unchanged += 1  # already recorded
            else:
                plan.refused[info.key] = info
            continue
        # (A refused object that was ingested before, e.g. a file replaced by a link, goes to a
        # run: its read step refuses it and removes the stale chunks.)
        plan.listed_bytes[info.key] = info.size
        plan.etags[info.key] = info.etag
        if (request_timeout is not None and row is not None and row["requested_etag"] == info.etag
                and row["requested_at"] is not None and now - row["requested_at"] < request_timeout
                and (row["status"] == DocumentStatus.PENDING or row["etag"] != info.etag)):
            plan.in_flight += 1
        elif row is None or row["status"] in (DocumentStatus.DELETED, DocumentStatus.PENDING):
            plan.new.append(info.key)
        elif (row["etag"] != info.etag or (row["size_bytes"] is not None and row["size_bytes"] != info.size)
              or (row["status"] == DocumentStatus.INGESTED and row["pii_mode"] != pii_mode)):
            plan.changed.append(info.key)
        elif row["status"] == DocumentStatus.FAILED and row["error_type"] in TRANSIENT_ERRORS:
            plan.retry.append(info.key)
        else:
            plan.unchanged += 1
    plan.missing = sorted(k for k, row in known.items() if k not in seen and row["status"] != DocumentStatus.DELETED)
    return plan


def _kb_pii_mode(db: Database, kb: str) -> str:
    try:
        return repository.get_kb(db, kb).pii
    except KeyError:  # not created yet: nothing of it was ingested under any mode
        return "off"


COUNTERS = ("new", "changed", "retry", "unchanged", "in_flight", "missing", "refused", "listed")


@dataclass(frozen=True)
class SyncPolicy:
    """How a sync pass batches its work (QUIVR_DOCUMENTS_PER_RUN, QUIVR_SYNC_*)."""

    documents_per_run: int = 100
    max_run_bytes: int = 256 * 1024 * 1024
    request_timeout: timedelta = timedelta(minutes=60)
    delete_after_misses: int = 2


@dataclass
class RunBatch:
    """The documents of one run: one KB, at most `documents_per_run` documents and about
    `max_run_bytes` of source."""

    kb: str
    documents: list[str]
    size_bytes: int


@dataclass
class SyncPass:
    """What one sync step found and asks for: runs to start, KBs seen, documents confirmed gone."""

    batches: list[RunBatch] = field(default_factory=list)
    kbs: list[str] = field(default_factory=list)
    confirmed_missing: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    cursor: dict = field(default_factory=dict)


def plan_sync(store: ObjectStore, db: Database, policy: SyncPolicy, defaults: KbConfig,
              kbs: Sequence[str] | None = None, force: bool = False, cursor: dict | None = None,
              max_objects: int | None = None) -> SyncPass:
    """Plan every KB of the store (or `kbs`): batched runs of new, changed and retryable
    documents, and the number of documents confirmed gone. `force` plans every listed document.
    With `cursor` and `max_objects`, list at most that many objects, resuming after the cursor's
    keys (the cursor is returned updated). Marks the planned documents as requested."""
    result = SyncPass(cursor={"after": {}, "passes": {}, **(cursor or {})})
    cursor = result.cursor
    budget = max_objects
    for kb in _fair_order(kbs or store.list_kbs(), cursor):
        if budget is not None and budget <= 0:
            break
        repository.ensure_kb(db, kb, defaults)
        result.kbs.append(kb)
        plan = plan_kb(store, db, kb, request_timeout=None if force else policy.request_timeout,
                       after=cursor["after"].get(kb), max_objects=budget)
        if force:
            planned = set(plan.to_ingest)
            plan.changed += [k for k in plan.etags if k not in planned]
            plan.unchanged = plan.in_flight = 0
        if budget is not None:
            budget -= plan.listed
        if plan.next_after is None:
            cursor["after"].pop(kb, None)
            cursor["passes"][kb] = cursor["passes"].get(kb, 0) + 1
        else:
            cursor["after"][kb] = plan.next_after
        for name in ("new", "changed", "retry", "missing", "refused"):
            result.counts[name] += len(getattr(plan, name))
        for name in ("unchanged", "in_flight", "listed"):
            result.counts[name] += getattr(plan, name)
        result.batches += batch_documents(kb, plan.to_ingest, plan.listed_bytes, policy)
        repository.mark_requested(db, kb, {k: plan.etags[k] for k in plan.to_ingest})
        record_refused(db, kb, plan.refused)
        passes = repository.count_missing(db, kb, plan.missing, plan.seen_again)
        result.confirmed_missing += sum(1 for n in passes.values() if n >= policy.delete_after_misses)
    result.counts["confirmed_missing"] = result.confirmed_missing
    result.counts["runs"] = len(result.batches)
    return result


def record_refused(db: Database, kb: str, refused: dict[str, ObjectInfo]) -> None:
    """Record objects the store will not read as failed `hostile_key`, with the reason, under
    their escaped names; nothing of them is read. An upsert: a second pass changes nothing."""
    if not refused:
        return
    repository.record_documents(db, [
        DocumentRecord(kb=kb, object_key=key, status=DocumentStatus.FAILED, error_type=ErrorType.HOSTILE_KEY,
                       failure_reason=info.refused, etag=info.etag, version_id=info.version_id,
                       size_bytes=info.size)
        for key, info in refused.items()])
    for key, info in refused.items():
        events.ingestion_failed(kb=kb, object_key=key, error_type=ErrorType.HOSTILE_KEY,
                                error_message=info.refused, status=DocumentStatus.FAILED)


def _fair_order(kbs: Sequence[str], cursor: dict) -> list[str]:
    """The order a budgeted step lists KBs in: a KB partway through its pass first, then the KBs
    with the fewest completed passes. Always starting from the first KB would spend every tick's
    budget on the first few KBs of a large deployment and never reach the others."""
    return sorted(kbs, key=lambda kb: (kb not in cursor["after"], cursor["passes"].get(kb, 0), kb))


def batch_documents(kb: str, keys: Sequence[str], sizes: dict[str, int], policy: SyncPolicy) -> list[RunBatch]:
    """Consecutive documents (in listing order) grouped by count and bytes."""
    batches: list[RunBatch] = []
    current: list[str] = []
    current_bytes = 0
    for key in dict.fromkeys(keys):
        size = sizes.get(key, 0)
        if current and (len(current) >= policy.documents_per_run
                        or current_bytes + size > policy.max_run_bytes):
            batches.append(RunBatch(kb, current, current_bytes))
            current, current_bytes = [], 0
        current.append(key)
        current_bytes += size
    if current:
        batches.append(RunBatch(kb, current, current_bytes))
    return batches
