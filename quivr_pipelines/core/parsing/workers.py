"""Parse and chunk several documents at once in worker processes.

Parsing is CPU-bound Python (unstructured's spaCy classifier), so a batch is spread over
`QUIVR_PARSE_WORKERS` processes (default: the number of cores). Workers are started once per
process and reused by every batch; a worker that dies (a parser crash, out of memory) fails only
the documents it held, as `parse_error`, and the pool is rebuilt.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.util
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from quivr_pipelines.core.catalog.repository import KbConfig
from quivr_pipelines.core.chunking import Chunk, chunk_elements
from quivr_pipelines.core.errors import ErrorType, IngestionError
from quivr_pipelines.core.parsing import ParsedDocument, parse_document

# Below this many documents (or bytes) a batch is parsed inline: starting workers costs more.
MIN_DOCUMENTS_FOR_WORKERS = 4

_lock = threading.Lock()
_executor: ProcessPoolExecutor | None = None
_executor_size = 0


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


def _pool(workers: int) -> ProcessPoolExecutor:
    global _executor, _executor_size
    with _lock:
        if _executor is None or _executor_size != workers:
            if _executor is not None:
                _executor.shutdown(cancel_futures=True)
            # spawn: the parent holds threads (database pool, onnxruntime) that fork would copy
            _executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_worker_init)
            _executor_size = workers
            _stop_workers_at_exit()
        return _executor


_exit_hook_registered = False


def _stop_workers_at_exit() -> None:
    """A process started by multiprocessing (Dagster's multiprocess executor runs each step in
    one) skips the interpreter's exit handlers and waits at exit for its live children; idle pool
    workers never exit by themselves, so it would hang. multiprocessing runs finalizers with an
    exit priority before that wait, in every process: stop the workers there."""
    global _exit_hook_registered
    if not _exit_hook_registered:
        multiprocessing.util.Finalize(None, shutdown_workers, exitpriority=100)
        _exit_hook_registered = True


def shutdown_workers() -> None:
    """Stop this process's parser workers (also at process exit, see `_stop_workers_at_exit`)."""
    global _executor
    with _lock:
        if _executor is not None:
            _executor.shutdown(wait=True, cancel_futures=True)
        _executor = None


def _discard_pool(pool: ProcessPoolExecutor) -> None:
    """Drop a broken pool; the next batch starts a fresh one. Only this pool: a newer, healthy
    one (started meanwhile for the next batch) stays."""
    global _executor
    with _lock:
        if _executor is pool:
            _executor = None
    pool.shutdown(wait=False, cancel_futures=True)


class ParseJob:
    """Documents handed to the workers; `results()` waits for them. Submitting the next batch
    before embedding the current one keeps the workers parsing while the embedder runs."""

    def __init__(self, items: Sequence[tuple[str, bytes, str | None]], config: KbConfig, workers: int):
        self._items = list(items)
        self._config = config
        self._futures: dict[str, Future] | None = None
        self._pool: ProcessPoolExecutor | None = None
        if workers > 1 and len(self._items) >= MIN_DOCUMENTS_FOR_WORKERS:
            self._futures = {}
            for _ in range(2):  # a pool broken since its last use (a worker killed) is replaced once
                pool = _pool(workers)
                try:
                    self._futures = {key: pool.submit(parse_and_chunk, data, key, ctype, config)
                                     for key, data, ctype in self._items}
                    self._pool = pool
                    break
                except BrokenProcessPool:
                    _discard_pool(pool)
            # No pool could take them: `results` parses each in a process of its own.

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
            # One document killed its worker; the pool took the others down with it (this batch's
            # and the next one's, already queued). Retry each alone so only the culprit fails.
            if self._pool is not None:
                _discard_pool(self._pool)
            by_key = {key: (data, ctype) for key, data, ctype in self._items}
            for key in casualties:
                results[key] = _isolated(key, *by_key[key], config)
        return results


def submit_parse(items: Sequence[tuple[str, bytes, str | None]], config: KbConfig,
                 workers: int | None = None) -> ParseJob:
    return ParseJob(items, config, workers or max(1, os.cpu_count() or 1))


def _isolated(key: str, data: bytes, content_type: str | None, config: KbConfig) -> ParseResult:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_init) as single:
        try:
            return single.submit(parse_and_chunk, data, key, content_type, config).result()
        except BrokenProcessPool:
            return ParseResult(error=IngestionError(
                ErrorType.PARSE_ERROR, "the parser process died on this document (crash or out of memory)"))
