"""Parse and chunk several documents at once in worker processes.

Parsing is CPU-bound Python (unstructured's spaCy classifier), so a batch is spread over the
worker processes of a `ParserPool` (default: one per core). A pool is an object with an owner,
not process-wide state: whoever opens it closes it, and two pools never touch each other's work.
A worker that dies (a parser crash, out of memory) fails only the document it held, as
`parse_error`; the others of its batch are parsed again.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from types import TracebackType

from quivr_pipelines.core.catalog.repository import KbConfig
from quivr_pipelines.core.chunking import Chunk, chunk_elements
from quivr_pipelines.core.errors import ErrorType, IngestionError
from quivr_pipelines.core.parsing import ParsedDocument, parse_document

# Below this many documents a batch is parsed inline: handing them to workers costs more.
MIN_DOCUMENTS_FOR_WORKERS = 4

ParseItem = tuple[str, bytes, str | None]  # object key, content, content type the store declared


@dataclass
class ParseResult:
    parsed: ParsedDocument | None = None
    chunks: list[Chunk] | None = None
    error: IngestionError | None = None
    seconds: float = 0.0  # parsing and chunking this document, in the process that did it


def parse_and_chunk(data: bytes, key: str, content_type: str | None, config: KbConfig) -> ParseResult:
    started = time.perf_counter()
    try:
        parsed = parse_document(data, key, content_type)
        chunks = chunk_elements(parsed.elements, config)
        if not chunks:
            raise IngestionError(ErrorType.NO_TEXT, "no extractable text")
        return ParseResult(parsed=parsed, chunks=chunks, seconds=time.perf_counter() - started)
    except IngestionError as exc:
        return ParseResult(error=exc)
    except Exception as exc:  # noqa: BLE001 - a parser bug becomes this document's failure
        return ParseResult(error=IngestionError(ErrorType.PARSE_ERROR, f"{type(exc).__name__}: {exc}"[:500]))


def _worker_init() -> None:
    from quivr_pipelines.core.parsing import offline_nlp

    offline_nlp.install()


def _spawn_executor(workers: int) -> ProcessPoolExecutor:
    # spawn: the parent holds threads (database pool, onnxruntime) that fork would copy
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init)


class ParserPool:
    """Parser worker processes, started at the first batch that needs them and reused by every
    batch submitted here until `close()`.

    The owner closes the pool (`with ParserPool() as pool:`, or a Dagster resource's
    `yield_for_execution`). Not only for tidiness: a process started by multiprocessing
    (Dagster's multiprocess executor runs each step in one) skips the interpreter's exit
    handlers and waits at exit for its live children, and idle workers never exit by
    themselves, so a step that left its pool open would hang at exit. There is deliberately no
    exit hook: the pool's lifetime is its owner's, visible in the code that opens it.

    Pools are independent objects: a pool of another size is another pool, and replacing or
    closing one never cancels work queued in another. Batches of fewer than
    `MIN_DOCUMENTS_FOR_WORKERS` documents, and every batch of a one-worker pool, are parsed
    inline in the caller's process and start no worker.
    """

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"a parser pool needs at least one worker, not {workers}")
        self.workers = workers or max(1, os.cpu_count() or 1)
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
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
        """Hand a batch to the workers and return at once; `ParseJob.results()` waits. Submitting
        the next batch before embedding the current one keeps the workers parsing meanwhile."""
        items = list(items)
        if self._closed:
            raise RuntimeError("this ParserPool is closed")
        if self.workers == 1 or len(items) < MIN_DOCUMENTS_FOR_WORKERS:
            return ParseJob(self, items, config)
        for _ in range(2):  # a pool broken since its last use (a worker killed) is replaced once
            executor = self._current_executor()
            try:
                futures = {key: executor.submit(parse_and_chunk, data, key, ctype, config)
                           for key, data, ctype in items}
            except BrokenProcessPool:
                self._discard(executor)
                continue
            return ParseJob(self, items, config, futures, executor)
        # No pool could take them: `results` parses each in a process of its own.
        return ParseJob(self, items, config, futures={})

    def close(self) -> None:
        """Stop the workers and wait for them to exit; queued documents are cancelled (a job
        whose results were not read by then raises). Idempotent."""
        with self._lock:
            executor, self._executor = self._executor, None
            self._closed = True
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _current_executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("this ParserPool is closed")
            if self._executor is None:
                self._executor = _spawn_executor(self.workers)
            return self._executor

    def _discard(self, executor: ProcessPoolExecutor) -> None:
        """Drop a broken executor; the next batch starts a fresh one. Only that one: a newer,
        healthy executor (started meanwhile for the next batch) stays. A broken executor has
        already failed its queued work and is stopping its processes; this waits for them."""
        with self._lock:
            if self._executor is executor:
                self._executor = None
        executor.shutdown(wait=True, cancel_futures=True)


class ParseJob:
    """One batch handed to a `ParserPool`; `results()` waits for it."""

    def __init__(self, pool: ParserPool, items: list[ParseItem], config: KbConfig,
                 futures: dict[str, Future] | None = None, executor: ProcessPoolExecutor | None = None):
        self._pool = pool
        self._items = items
        self._config = config
        self._futures = futures  # None: parse inline
        self._executor = executor

    def results(self) -> dict[str, ParseResult]:
        config = self._config
        if self._futures is None:
            return {key: parse_and_chunk(data, key, ctype, config) for key, data, ctype in self._items}
        results, casualties = {}, []
        for key, _, _ in self._items:
            future = self._futures.get(key)
            try:
                if future is None:
                    raise BrokenProcessPool("never submitted")
                results[key] = future.result()
            except (BrokenProcessPool, CancelledError):
                casualties.append(key)
        if casualties:
            if self._pool.closed:
                raise RuntimeError("the ParserPool was closed before this batch's results were read")
            # One document killed its worker; the executor took the others down with it (this
            # batch's and the next one's, already queued). Retry each alone so only the culprit fails.
            if self._executor is not None:
                self._pool._discard(self._executor)
            by_key = {key: (data, ctype) for key, data, ctype in self._items}
            for key in casualties:
                results[key] = _isolated(key, *by_key[key], config)
        return results


def _isolated(key: str, data: bytes, content_type: str | None, config: KbConfig) -> ParseResult:
    with _spawn_executor(1) as single:
        try:
            return single.submit(parse_and_chunk, data, key, content_type, config).result()
        except BrokenProcessPool:
            return ParseResult(error=IngestionError(
                ErrorType.PARSE_ERROR, "the parser process died on this document (crash or out of memory)"))
