"""Parse and chunk documents in worker processes, each document under a wall-time and a memory limit.

Parsing is CPU-bound Python (unstructured's spaCy classifier) and its cost is set by the file:
a zip bomb or a million cells held a run for minutes at gigabytes. So every document is parsed
in a worker process of a `ParserPool` (default: one per core), never in the caller:

- memory: each worker runs under `resource.setrlimit(RLIMIT_AS)` of `ParseLimits.memory_mb`, so
  an allocation past it fails at once, as a MemoryError, inside the parser (measured: a zip bomb
  is stopped in seconds at the limit; watching RSS from outside lets a single 300 MB allocation
  through before the next sample). The document is `too_complex` and the worker is replaced,
  its heap being no longer trustworthy;
- wall time: the pool's thread that handed the document over waits at most
  `ParseLimits.timeout_seconds`, then kills the worker (SIGKILL: a parser in C cannot be
  interrupted otherwise) and records `parse_timeout`; a fresh worker takes the next document.

One thread per worker hands it one document at a time from the pool's queue, so a slow document
holds one worker and the others keep parsing the rest of the run. A worker that dies under a
document for another reason (a crash, the kernel's OOM killer, an operator) costs that document
one retry in a fresh worker (`_isolated`); dying twice is the document's `parse_error`.
A pool is an object with an owner, not process-wide state: whoever opens it closes it, and two
pools never touch each other's work.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, wait
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import TracebackType

from quivr_pipelines.core.catalog.repository import KbConfig
from quivr_pipelines.core.chunking import Chunk, chunk_document
from quivr_pipelines.core.errors import ErrorType, IngestionError
from quivr_pipelines.core.parsing import ParsedDocument, parse_document
from quivr_pipelines.core.parsing.guards import ParseLimits

ParseItem = tuple[str, bytes, str | None]  # object key, content, content type the store declared
POLL_SECONDS = 0.2  # how often a waiting thread looks at its worker (and at the pool closing)
START_TIMEOUT_SECONDS = 180.0  # a worker loading unstructured and spaCy on a busy machine
# A worker whose address space grew past this share of its headroom (limit minus the loaded
# libraries: a big document's heap that Python does not give back) is replaced after the
# document, so the next one gets the full limit.
RECYCLE_SHARE = 0.6
# A document that fails with the worker's peak address space this close to the limit failed
# for want of memory, whatever the parser said.
OUT_OF_MEMORY_SHARE = 0.9


@dataclass
class ParseResult:
    parsed: ParsedDocument | None = None
    chunks: list[Chunk] | None = None
    error: IngestionError | None = None
    seconds: float = 0.0  # parsing and chunking this document, in the process that did it
    peak_rss_mb: float | None = None  # the worker's peak resident memory during this document
    cpu_seconds: float | None = None  # CPU the worker spent on it (wall time minus waiting for a core)


def parse_and_chunk(data: bytes, key: str, content_type: str | None, config: KbConfig,
                    limits: ParseLimits | None = None) -> ParseResult:
    started = time.perf_counter()
    try:
        parsed = parse_document(data, key, content_type, limits)
        chunks = chunk_document(parsed, config)
        if not chunks:
            raise IngestionError(ErrorType.NO_TEXT, "no extractable text")
        return ParseResult(parsed=parsed, chunks=chunks, seconds=time.perf_counter() - started)
    except IngestionError as exc:
        return ParseResult(error=exc, seconds=time.perf_counter() - started)
    except MemoryError:
        return ParseResult(error=_out_of_memory(limits or ParseLimits()), seconds=time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - a parser bug becomes this document's failure
        return ParseResult(error=IngestionError(ErrorType.PARSE_ERROR, f"{type(exc).__name__}: {exc}"[:500]),
                           seconds=time.perf_counter() - started)


def _out_of_memory(limits: ParseLimits, error: IngestionError | None = None) -> IngestionError:
    seen = f"; the parser said {error.message}"[:300] if error is not None and error.message else ""
    return IngestionError(ErrorType.TOO_COMPLEX, f"parsing needed more memory than the limit of"
                                                 f" {limits.memory_mb:,} MB (QUIVR_PARSE_MEMORY_MB){seen}")


# --- the worker process -------------------------------------------------------------------

def _proc_status_kb(field: str) -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_peak_rss() -> None:
    try:  # Linux: "5" resets VmHWM, so each document's peak is its own
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        pass


def _warm_up() -> None:
    """Load spaCy's model (what every document needs, a second or more) before the first
    document, so its time limit is spent on the document. Per-format modules stay lazy: they
    cost a fraction of a second at the first document of their kind."""
    from quivr_pipelines.core.parsing import offline_nlp

    offline_nlp.install()
    parse_document(b"Warm-up. The river carries silt to the delta.", "warm-up.txt")


def _worker_main(conn: Connection, limits: ParseLimits) -> None:
    import resource

    memory = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    try:
        _warm_up()
    except MemoryError:
        conn.send(("failed", f"the memory limit of {limits.memory_mb:,} MB (QUIVR_PARSE_MEMORY_MB) is below"
                             " what the parsing libraries need to load"))
        return
    baseline = _proc_status_kb("VmSize") * 1024  # the loaded libraries
    conn.send(("ready", os.getpid()))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        key, data, content_type, config = task
        _reset_peak_rss()
        cpu = time.process_time()
        result = parse_and_chunk(data, key, content_type, config, limits)
        result.cpu_seconds = time.process_time() - cpu
        del data, task
        result.peak_rss_mb = _proc_status_kb("VmHWM") / 1024
        peak = _proc_status_kb("VmPeak") * 1024
        if (result.error is not None and peak >= OUT_OF_MEMORY_SHARE * memory
                and "QUIVR_PARSE_MEMORY_MB" not in result.error.message):
            # C parsers report a failed allocation their own way (lxml: "XMLSyntaxError: unknown
            # error"); at the limit, it was the limit.
            result.error = _out_of_memory(limits, result.error)
        # A worker that came near its limit is replaced: the next document gets the whole limit,
        # and a failure near the limit is this document's doing.
        recycle = peak > baseline + RECYCLE_SHARE * (memory - baseline)
        try:
            conn.send((result, recycle))
        except MemoryError:
            conn.send((ParseResult(error=IngestionError(
                ErrorType.TOO_COMPLEX, f"the parsed document does not fit the memory limit of"
                                       f" {limits.memory_mb:,} MB (QUIVR_PARSE_MEMORY_MB)")), True))
        if recycle:
            return


# --- the pool -----------------------------------------------------------------------------

@dataclass
class _Task:
    key: str
    data: bytes
    content_type: str | None
    config: KbConfig
    future: Future


class _Died(Exception):
    """The worker ended without answering."""


class _WorkerSlot:
    """One worker process and the thread that feeds it, one document at a time."""

    def __init__(self, pool: ParserPool, index: int):
        self.pool = pool
        self.process: multiprocessing.Process | None = None
        self.conn: Connection | None = None
        self.thread = threading.Thread(target=self._run, name=f"quivr-parser-{index}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                task = self.pool._queue.get()
                if task is None or self.pool.closed:
                    if task is not None:
                        task.future.cancel()
                    return
                if not task.future.set_running_or_notify_cancel():
                    continue
                try:
                    task.future.set_result(self.parse(task))
                except _PoolClosing:
                    task.future.set_exception(CancelledError())
                except Exception as exc:  # noqa: BLE001 - e.g. no process could start: the document fails
                    task.future.set_result(ParseResult(error=IngestionError(
                        ErrorType.PARSE_ERROR, f"parser pool: {type(exc).__name__}: {exc}"[:500])))
                except BaseException as exc:  # noqa: BLE001 - a waiting caller must always hear back
                    task.future.set_exception(exc)
        finally:
            self.stop()

    def parse(self, task: _Task) -> ParseResult:
        try:
            return self.attempt(task)
        except _Died:
            return _isolated(self, task)

    def attempt(self, task: _Task) -> ParseResult:
        """Parse in this slot's worker (started if needed); `_Died` if it ended without an answer."""
        limits = self.pool.limits
        conn = self.ensure_worker()
        if isinstance(conn, ParseResult):
            return conn  # no worker could start: every document says why
        try:
            conn.send((task.key, task.data, task.content_type, task.config))
        except (OSError, ValueError) as exc:
            self.kill()
            raise _Died from exc
        deadline = time.monotonic() + limits.timeout_seconds
        while not conn.poll(max(0.0, min(POLL_SECONDS, deadline - time.monotonic()))):
            if self.pool.closed:
                self.kill()
                raise _PoolClosing
            if time.monotonic() >= deadline:
                self.kill()
                return ParseResult(error=IngestionError(
                    ErrorType.PARSE_TIMEOUT, f"parsing took longer than the limit of {limits.timeout_seconds:g} s"
                                             " (QUIVR_PARSE_TIMEOUT_SECONDS); the parser was stopped"),
                    seconds=limits.timeout_seconds)
        try:
            result, recycle = conn.recv()
        except (EOFError, OSError) as exc:
            self.kill()
            raise _Died from exc
        if recycle:
            self.stop()
        return result

    def ensure_worker(self) -> Connection | ParseResult:
        if self.process is not None and self.process.is_alive() and self.conn is not None:
            return self.conn
        self.kill()
        parent, child = multiprocessing.Pipe()
        # spawn: the parent holds threads (database pool, onnxruntime) that fork would copy
        process = multiprocessing.get_context("spawn").Process(
            target=_worker_main, args=(child, self.pool.limits), daemon=True, name="quivr-parser")
        process.start()
        child.close()
        self.process, self.conn = process, parent
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not parent.poll(POLL_SECONDS):
            if self.pool.closed:
                self.kill()
                raise _PoolClosing
            if time.monotonic() >= deadline or not process.is_alive():
                break
        try:
            kind, detail = parent.recv() if parent.poll(0) else ("failed", "it did not start in time")
        except (EOFError, OSError):
            kind, detail = "failed", f"it exited with code {process.exitcode}"
        if kind == "ready":
            return parent
        self.kill()
        return ParseResult(error=IngestionError(ErrorType.PARSE_ERROR,
                                                f"no parser process could start: {detail}"))

    def pid(self) -> int | None:
        process = self.process
        return process.pid if process is not None and process.is_alive() else None

    def stop(self) -> None:
        """Let an idle worker exit (end of its input), then make sure it did."""
        conn, process = self.conn, self.process
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
        if process is not None:
            process.join(5)
        self.kill()

    def kill(self) -> None:
        conn, process, self.conn, self.process = self.conn, self.process, None, None
        if process is not None:
            if process.is_alive():
                process.kill()
            process.join(10)
            if not process.is_alive():
                process.close()
        if conn is not None:
            conn.close()


class _PoolClosing(Exception):
    """The pool was closed while this slot waited."""


def _isolated(slot: _WorkerSlot, task: _Task) -> ParseResult:
    """A document whose worker died under it, once more in a fresh worker: the death may have
    been another's doing (the OOM killer, an operator); dying again is the document's."""
    try:
        return slot.attempt(task)
    except _Died:
        limit = slot.pool.limits.memory_mb
        return ParseResult(error=IngestionError(
            ErrorType.PARSE_ERROR, "the parser process died on this document twice (a crash, or out of"
                                   f" memory below the {limit:,} MB limit)"))


class ParserPool:
    """Parser worker processes, started at the first batch and reused by every batch submitted
    here until `close()`; each document under `limits` (wall time, memory).

    The owner closes the pool (`with ParserPool() as pool:`, or a Dagster resource's
    `yield_for_execution`). Not only for tidiness: a process started by multiprocessing
    (Dagster's multiprocess executor runs each step in one) skips the interpreter's exit
    handlers and waits at exit for its live children, and idle workers never exit by
    themselves, so a step that left its pool open would hang at exit. There is deliberately no
    exit hook: the pool's lifetime is its owner's, visible in the code that opens it.

    Pools are independent objects: a pool of another size or other limits is another pool, and
    replacing or closing one never cancels work queued in another.
    """

    def __init__(self, workers: int | None = None, limits: ParseLimits | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"a parser pool needs at least one worker, not {workers}")
        self.workers = workers or max(1, os.cpu_count() or 1)
        self.limits = limits or ParseLimits()
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Task | None] = queue.Queue()
        self._slots: list[_WorkerSlot] = []
        self._closed = False

    def __enter__(self) -> ParserPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, items: Sequence[ParseItem], config: KbConfig) -> ParseJob:
        """Queue a batch for the workers and return at once; `ParseJob.results()` waits. Submitting
        the next batch before embedding the current one keeps the workers parsing meanwhile."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this ParserPool is closed")
            if items and not self._slots:
                self._slots = [_WorkerSlot(self, index) for index in range(self.workers)]
            futures: dict[str, Future] = {}
            for key, data, content_type in items:
                futures[key] = Future()
                self._queue.put(_Task(key, data, content_type, config, futures[key]))
        return ParseJob(self, futures)

    def worker_pids(self) -> list[int]:
        """The live worker processes (none before the first batch)."""
        return [pid for pid in (slot.pid() for slot in self._slots) if pid is not None]

    def close(self) -> None:
        """Stop the workers and wait for them to exit; queued documents are cancelled and a
        document being parsed is abandoned (a job whose results were not read by then raises).
        Idempotent."""
        with self._lock:
            self._closed = True
            slots, self._slots = self._slots, []
            while True:
                try:
                    task = self._queue.get_nowait()
                except queue.Empty:
                    break
                if task is not None:
                    task.future.cancel()
            for _ in slots:
                self._queue.put(None)
        for slot in slots:
            slot.thread.join()


class ParseJob:
    """One batch handed to a `ParserPool`; `results()` waits for it."""

    def __init__(self, pool: ParserPool, futures: dict[str, Future]):
        self._pool = pool
        self._futures = futures

    def ready(self, stall_seconds: float | None) -> tuple[dict[str, ParseResult], ParseJob | None]:
        """The results of this batch, but not wait on its stragglers: once no document of the
        batch has finished for `stall_seconds` (None: wait for all), the results so far and a
        job of the rest (None when nothing is left). A slow document that no static guard
        catches parses up to its wall-time limit; the rest of its batch need not wait for it."""
        pending = {future for future in self._futures.values() if not future.done()}
        while pending and stall_seconds is not None:
            finished, pending = wait(pending, timeout=stall_seconds, return_when=FIRST_COMPLETED)
            if not finished:  # no progress for stall_seconds: the rest are stragglers
                break
        if stall_seconds is None or not pending:
            return self.results(), None
        done = {key: future for key, future in self._futures.items() if future not in pending}
        rest = {key: future for key, future in self._futures.items() if future in pending}
        return ParseJob(self._pool, done).results(), ParseJob(self._pool, rest)

    def results(self) -> dict[str, ParseResult]:
        results = {}
        for key, future in self._futures.items():
            try:
                results[key] = future.result()
            except CancelledError:
                raise RuntimeError("the ParserPool was closed before this batch's results were read") from None
        return results
