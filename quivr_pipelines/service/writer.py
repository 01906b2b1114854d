"""Audit and usage rows written off the request path, in batches, never lost on shutdown and never
stalled by one bad row.

Requests only append to a queue (microseconds); one thread inserts what accumulated every
QUIVR_AUDIT_FLUSH_SECONDS in transactions of at most BATCH rows. `close()` drains the queue and
flushes before returning, so a clean shutdown (SIGTERM to uvicorn) writes every row; only a hard
kill loses what was still queued (at most one flush interval).

Two kinds of failure, told apart by the error:
- the database is unreachable or unwell (OperationalError, pool timeout, anything not about the
  data): the batch is kept and retried on the next flush, as long as the database takes;
- the database refuses the data (DataError, IntegrityError, a value the driver cannot encode):
  the batch is split in halves until the refused row(s) are alone (bisection: about 2·log2(n)
  extra transactions for one bad row in n), every good row is written, and each refused row is
  recorded in `audit_poison` redacted and escaped, and logged (`audit_row_refused`). One such
  row once held the writer's queue forever (a request for `/%00`: PostgreSQL refuses NUL in text).

Rows are sanitised before they are queued (`sanitise`: NUL and invalid UTF-8 escaped, every text
bounded), so ordinary hostile input never reaches the bisection; it is the net for the rest.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
from dataclasses import dataclass, fields
from datetime import datetime

import psycopg

from quivr_pipelines.core.audit import clean_text, clean_value
from quivr_pipelines.core.catalog.database import Database
from quivr_pipelines.core.redaction import redact, redact_value

log = logging.getLogger(__name__)
BATCH = 500
MAX_PENDING = 100_000  # beyond this while the database is down, the oldest rows are dropped (logged)
TEXT_LIMITS = {"path": 1024, "request_id": 64, "api_key_id": 64, "kb": 128, "action": 64, "method": 16,
               "client": 256, "kind": 64, "provider": 64, "model": 256}
DEFAULT_TEXT_LIMIT = 256
POISON_TEXT_LIMIT = 256


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


def sanitise(row: AuditRow | UsageRow) -> AuditRow | UsageRow:
    """Every text field escaped and bounded (`core.audit.clean_text`); other fields as they are."""
    changes = {}
    for f in fields(row):
        value = getattr(row, f.name)
        if isinstance(value, str):
            cleaned = clean_text(value, TEXT_LIMITS.get(f.name, DEFAULT_TEXT_LIMIT))
            if cleaned is not value:
                changes[f.name] = cleaned
    return dataclasses.replace(row, **changes) if changes else row


def refused(exc: BaseException) -> bool:
    """True when the database (or the driver) refuses the data itself, not the connection:
    bisect then, instead of retrying the same batch for ever."""
    if isinstance(exc, psycopg.DataError | psycopg.IntegrityError | psycopg.NotSupportedError):
        return True
    return isinstance(exc, ValueError | TypeError | OverflowError) and not isinstance(exc, psycopg.Error)


class BatchWriter:
    def __init__(self, db: Database, flush_seconds: float = 1.0, metrics=None):
        self.db = db
        self.flush_seconds = flush_seconds
        self.metrics = metrics
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: list = []
        self._stop = threading.Event()
        self._flushed = threading.Condition()
        self.written = 0
        self.dropped = 0
        self.poisoned = 0  # rows the database refused (recorded in audit_poison)
        self.failures = 0  # flushes that failed and will be retried (database unreachable)
        self.transactions = 0  # insert transactions attempted (bisection cost)
        self._progress = 0
        self.added = 0  # rows accepted by add(): flush() waits for this many to be accounted for
        self._accounted = 0  # rows written, isolated as refused, or dropped from the backlog
        self._added_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="quivr-audit-writer", daemon=True)
        self._thread.start()

    @property
    def backlog(self) -> int:
        return self._queue.qsize() + len(self._pending)

    def add(self, row: AuditRow | UsageRow) -> None:
        row = sanitise(row)
        with self._added_lock:
            self.added += 1
        self._queue.put(row)

    def _drain(self) -> None:
        while True:
            try:
                self._pending.append(self._queue.get_nowait())
            except queue.Empty:
                return

    def _count(self, name: str, table: str | None = None, amount: int = 1) -> None:
        metric = getattr(self.metrics, name, None)
        if metric is not None and amount:
            (metric.labels(table) if table else metric).inc(amount)

    def _report_backlog(self) -> None:
        if self.metrics is not None:
            self.metrics.audit_backlog.set(self.backlog)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._report_backlog()
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
        self._report_backlog()
        if self._pending:
            log.error("%d audit/usage rows could not be written at shutdown", len(self._pending))

    def _flush(self) -> None:
        while self._pending:
            batch = self._pending[:BATCH]
            self._progress = 0
            try:
                self._write(batch)
            except Exception as exc:  # noqa: BLE001 - the database is down: keep the rows, retry later
                del self._pending[:self._progress]  # rows the bisection finished before the outage
                self.failures += 1
                self._count("audit_flush_failures")
                log.warning("audit/usage batch of %d rows not written yet (%s); retrying",
                            len(batch) - self._progress, type(exc).__name__)
                if len(self._pending) > MAX_PENDING:
                    excess = len(self._pending) - MAX_PENDING
                    del self._pending[:excess]
                    self.dropped += excess
                    self._accounted += excess
                    self._count("audit_dropped", amount=excess)
                    log.error("audit/usage backlog over %d rows: %d oldest rows dropped", MAX_PENDING, excess)
                return
            del self._pending[:len(batch)]
            with self._flushed:
                self._flushed.notify_all()

    def _write(self, batch: list) -> None:
        """Insert `batch`; refused rows are isolated and recorded. Raises only for transient errors;
        `_progress` then counts the leading rows of the flushed batch already written or
        recorded (the bisection goes left to right), which are not retried."""
        try:
            self._insert(batch)
        except Exception as exc:
            if not refused(exc):
                raise
            if len(batch) == 1:
                self._record_poison(batch[0], exc)
                self._progress += 1
                return
            middle = len(batch) // 2
            self._write(batch[:middle])
            self._write(batch[middle:])
            return
        self.written += len(batch)
        self._accounted += len(batch)
        self._progress += len(batch)
        for cls, (table, _) in _TABLES.items():
            self._count("audit_written", table, sum(isinstance(r, cls) for r in batch))

    def _insert(self, batch: list) -> None:
        self.transactions += 1
        with self.db.transaction() as conn:
            cur = conn.cursor()
            for cls, (table, columns) in _TABLES.items():
                rows = [tuple(getattr(r, c) for c in columns) for r in batch if isinstance(r, cls)]
                if rows:
                    cur.executemany(
                        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
                        rows)

    def _record_poison(self, row, exc: BaseException) -> None:
        table = _TABLES[type(row)][0]
        self.poisoned += 1
        self._accounted += 1
        self._count("audit_refused", table)
        try:  # nothing about this one row may raise into the loop: its batch would stall again
            sqlstate = getattr(getattr(exc, "diag", None), "sqlstate", None) or "client"
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            error = clean_text(redact(f"{sqlstate} {type(exc).__name__}: {first_line}"), POISON_TEXT_LIMIT)
            data = clean_value(redact_value({f.name: _plain(getattr(row, f.name)) for f in fields(row)}),
                               POISON_TEXT_LIMIT)
            log.error("audit/usage row refused by the database and isolated: table=%s error=%s row=%s",
                      table, error, data)
            self._insert_poison(table, error, json.dumps(data, default=str))
        except Exception as poison_exc:  # noqa: BLE001 - logged; never block the queue
            self.dropped += 1
            self._count("audit_dropped")
            log.error("refused audit/usage row could not be recorded in audit_poison (%s); dropped",
                      type(poison_exc).__name__)

    def _insert_poison(self, table: str, error: str, data: str) -> None:
        self.transactions += 1
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO audit_poison (table_name, error, row_data) VALUES (%s, %s, %s::jsonb)",
                         (table, error, data))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued before this call is written or isolated (tests, shutdown)."""
        target = self.added

        def done() -> bool:
            return self._accounted >= target

        with self._flushed:
            return self._flushed.wait_for(done, timeout=timeout)

    def close(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)


def _plain(value):
    """A row value as JSON will take it; a string is escaped so a refused value is readable."""
    if isinstance(value, str):
        return value.encode("unicode_escape", "backslashreplace").decode("ascii")
    if isinstance(value, datetime):
        return value.isoformat()
    return value
