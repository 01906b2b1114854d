"""Share one embedded engine directory between processes, one holder at a time.

Qdrant's embedded engine (like SQLite in exclusive mode) lets only one process open a shard.
Every process follows the same protocol on two lock files in the store's root:

- `.intent` : a process that wants the store takes it exclusively and keeps it until it holds
  the store; a waiting intent is how a long-lived holder learns that somebody is queuing;
- `.lock`   : held exclusively for as long as the process keeps shards open.

Long-lived holders keep the store open between calls, since opening a shard costs ~0.2 s: a
Dagster run from one batch to the next, the query service between requests. Each hands it over
as soon as it sees a waiting intent: it closes its shards, releases, queues like everyone else
and reopens when the other process is done (`EmbeddedStore(keep_open=True)` watches for waiters
in a background thread, so a holder busy with something else, such as embedding the next batch,
hands over between two of its calls). Occasional users (CLI commands) hold the store only for
the length of each call. No process ever sees "already accessed by another instance", and no write is lost,
because nobody opens a shard without holding `.lock`.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

ACQUIRE_TIMEOUT_SECONDS = 600.0


class StoreBusy(RuntimeError):
    """Another process kept the embedded store for longer than the timeout."""


class StoreServed(RuntimeError):
    """Another `serve` process already serves this embedded store."""


def claim_for_serving(root: Path) -> int:
    """One query service per embedded store: `.serve` is held exclusively for the life of a
    `serve` process (the descriptor is returned and must stay open; it is not inherited).

    Why refuse instead of sharing: both services keep the store open and hand it over to each
    other on every request (close the shards, reopen ~0.2 s later), so under load each request
    pays a handoff or two: measured with two services on one store, both queried, a search went
    from 14 ms (median, one service) to 1.1 s (78x). A second service adds no capacity on one
    store anyway (one holder at a time); more capacity is QUIVR_QDRANT_URL.
    Dagster runs and CLI commands still share the store with the service through the handoff.
    """
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".serve", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreServed(f"another `quivr-pipelines serve` (pid {holder}) already serves the embedded "
                          f"vector store {root}: stop it, use another QUIVR_DATA_DIR, or set "
                          "QUIVR_QDRANT_URL to a Qdrant server to run several services") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


class StoreHandoff:
    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self._intent_fd = os.open(root / ".intent", os.O_RDWR | os.O_CREAT, 0o644)
        self._lock_fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        self._mutex = threading.RLock()  # threads of this process share one holder
        self.held = False

    def acquire(self, timeout: float = ACQUIRE_TIMEOUT_SECONDS) -> None:
        """Wait until this process holds the store (call with the mutex held)."""
        if self.held:
            return
        deadline = time.monotonic() + timeout
        self._wait(self._intent_fd, deadline)
        try:
            self._wait(self._lock_fd, deadline)
        finally:
            fcntl.flock(self._intent_fd, fcntl.LOCK_UN)
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, str(os.getpid()).encode(), 0)
        self.held = True

    def _wait(self, fd: int, deadline: float) -> None:
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = os.pread(self._lock_fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    raise StoreBusy(f"the embedded vector store is held by process {holder}; "
                                    "gave up waiting (is a process stuck while holding it?)") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    def release(self) -> None:
        if self.held:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            self.held = False

    def someone_waiting(self) -> bool:
        """True when another process holds `.intent`, i.e. queues for the store."""
        try:
            fcntl.flock(self._intent_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._intent_fd, fcntl.LOCK_UN)
        return False

    @contextmanager
    def mutex(self):
        with self._mutex:
            yield

    def close(self) -> None:
        self.release()
        os.close(self._intent_fd)
        os.close(self._lock_fd)
