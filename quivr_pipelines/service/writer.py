"""Audit and usage rows written off the request path, in batches, and never lost on shutdown.

Requests only append to a queue (microseconds); one thread inserts what accumulated every
QUIVR_AUDIT_FLUSH_SECONDS (or sooner past BATCH rows) in one transaction per batch. A failing
insert (database restarting) keeps its rows and retries on the next flush; `close()` drains the
queue and flushes before returning, so a clean shutdown (SIGTERM to uvicorn) writes every row.
Only a hard kill loses what was still queued (at most one flush interval).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, fields
from datetime import datetime

from quivr_pipelines.core.catalog.database import Database

log = logging.getLogger(__name__)
BATCH = 500
MAX_PENDING = 100_000  # beyond this while the database is down, the oldest rows are dropped (logged)


@dataclass(frozen=True)
class AuditRow:
    at: datetime
    request_id: str
    api_key_id: str | None
    kb: str | None
    action: str
    method: str
    path: str
    status: int
    latency_ms: float
    client: str | None


@dataclass(frozen=True)
class UsageRow:
    kind: str
    provider: str
    model: str
    kb: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    inputs: int = 0
    cached_inputs: int = 0
    api_key_id: str | None = None


_TABLES = {
    AuditRow: ("audit_log", [f.name for f in fields(AuditRow)]),
    UsageRow: ("usage_ledger", [f.name for f in fields(UsageRow)]),
}


class BatchWriter:
    def __init__(self, db: Database, flush_seconds: float = 1.0):
        self.db = db
        self.flush_seconds = flush_seconds
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: list = []
        self._stop = threading.Event()
        self._flushed = threading.Condition()
        self.written = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._loop, name="quivr-audit-writer", daemon=True)
        self._thread.start()

    def add(self, row: AuditRow | UsageRow) -> None:
        self._queue.put(row)

    def _drain(self) -> None:
        while True:
            try:
                self._pending.append(self._queue.get_nowait())
            except queue.Empty:
                return

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._pending.append(self._queue.get(timeout=0.2))
            except queue.Empty:
                if self._pending:  # a batch that failed earlier
                    self._stop.wait(self.flush_seconds)
                    self._flush()
                continue
            self._stop.wait(self.flush_seconds)  # the batch window; close() ends it early
            self._drain()
            self._flush()
        self._drain()
        self._flush()
        if self._pending:
            log.error("%d audit/usage rows could not be written at shutdown", len(self._pending))

    def _flush(self) -> None:
        if not self._pending:
            return
        batch = self._pending[:]
        try:
            with self.db.transaction() as conn:
                cur = conn.cursor()
                for cls, (table, columns) in _TABLES.items():
                    rows = [tuple(getattr(r, c) for c in columns) for r in batch if isinstance(r, cls)]
                    if rows:
                        cur.executemany(
                            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
                            rows)
        except Exception:  # keep the rows, retry on the next flush
            log.exception("audit/usage batch of %d rows not written yet; retrying", len(batch))
            if len(self._pending) > MAX_PENDING:
                excess = len(self._pending) - MAX_PENDING
                del self._pending[:excess]
                self.dropped += excess
            return
        del self._pending[:len(batch)]
        self.written += len(batch)
        with self._flushed:
            self._flushed.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued before this call is written (tests, shutdown)."""
        target = self.written + self._queue.qsize() + len(self._pending)
        with self._flushed:
            return self._flushed.wait_for(lambda: self.written >= target, timeout=timeout)

    def close(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
