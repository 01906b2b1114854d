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

`CollectionFence` (two more lock files, in each collection's directory) keeps the writers of one
collection out while its index is rebuilt on a copy, so that readers can go on reading the live
shard; the rebuild protocol that uses it is in `embedded.py`'s docstring:

- `.rebuild`: a rebuild takes it exclusively when it queues and keeps it until it is done (its pid
  is written in it); a writer passes through it (shared, released at once), so a queued rebuild
  stops new writers and a busy ingestion cannot starve it (the role `.intent` plays above);
- `.write` : held shared by every write call of the collection, from before it queues for the
  store until its write is flushed; exclusively by the rebuild, which thus waits for the writes
  in flight and then holds every writer off.

Never wait for a fence while holding `.lock` or the in-process mutex: the holder that must hand
the store over to the rebuild would be the one waiting (a deadlock). Each acquisition opens its
own descriptors: flock locks belong to an open file description, so two threads of one process
exclude each other as two processes do.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

ACQUIRE_TIMEOUT_SECONDS = 600.0
# A writer waits for a rebuild of its collection at most this long: a build takes ~70 s at 100k
# points on 2 cores (more than linear beyond), so an hour is a stuck rebuild, not a big one.
REBUILD_WAIT_SECONDS = 3600.0


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
        _flock_until(fd, fcntl.LOCK_EX, deadline, lambda: StoreBusy(
            f"the embedded vector store is held by process {_holder(self._lock_fd)}; "
            "gave up waiting (is a process stuck while holding it?)"))

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


class CollectionFence:
    """The writers of one collection against a rebuild of its index (see the docstring above)."""

    def __init__(self, directory: Path, name: str):
        self.directory = directory
        self.name = name

    def _open(self, file: str) -> int:
        return os.open(self.directory / file, os.O_RDWR | os.O_CREAT, 0o644)

    @contextmanager
    def writing(self, timeout: float = REBUILD_WAIT_SECONDS):
        """Held around one write call, outside `StoreHandoff` (see above). Yields the seconds waited."""
        started = time.monotonic()
        deadline = started + timeout
        gate, fence = self._open(".rebuild"), self._open(".write")
        def busy():
            return StoreBusy(f"collection {self.name!r} is being re-indexed by process {_holder(gate)}; "
                             f"gave up waiting after {timeout:.0f} s (is that process stuck?)")

        try:
            _flock_until(gate, fcntl.LOCK_SH, deadline, busy)
            _flock_until(fence, fcntl.LOCK_SH, deadline, busy)  # free: a rebuild holds it only with the gate
            fcntl.flock(gate, fcntl.LOCK_UN)
            yield time.monotonic() - started
        finally:
            os.close(fence)
            os.close(gate)

    @contextmanager
    def rebuilding(self, timeout: float = ACQUIRE_TIMEOUT_SECONDS):
        """Held for a whole rebuild: no write of the collection starts or is in flight inside."""
        deadline = time.monotonic() + timeout
        gate, fence = self._open(".rebuild"), self._open(".write")
        try:
            _flock_until(gate, fcntl.LOCK_EX, deadline, lambda: StoreBusy(
                f"collection {self.name!r} is already being re-indexed by process {_holder(gate)}"))
            os.ftruncate(gate, 0)
            os.pwrite(gate, str(os.getpid()).encode(), 0)
            _flock_until(fence, fcntl.LOCK_EX, deadline, lambda: StoreBusy(
                f"writes to collection {self.name!r} kept going for {timeout:.0f} s; "
                "gave up waiting to re-index it"))
            yield
        finally:
            os.close(fence)  # the fence first: nobody holds `.write` exclusively without `.rebuild`
            os.close(gate)

    def rebuild_running(self) -> bool:
        """True when a live process holds `.rebuild` (or a writer is passing through it)."""
        gate = self._open(".rebuild")
        try:
            fcntl.flock(gate, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(gate)


def _holder(fd: int) -> str:
    return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"


def _flock_until(fd: int, mode: int, deadline: float, busy) -> None:
    """flock with a deadline: poll (5 ms doubling to 100 ms), then raise `busy()`."""
    delay = 0.005
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise busy() from None
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
