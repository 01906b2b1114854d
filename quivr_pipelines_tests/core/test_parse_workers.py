"""Parser worker processes: a dead worker costs at most a retry, never the following batches; a
pool belongs to its owner, who stops it, and never touches another pool's work."""

import multiprocessing
import os
import signal
import time

import pytest

from quivr_pipelines.core.catalog.repository import KbConfig
from quivr_pipelines.core.parsing import workers
from quivr_pipelines.core.parsing.workers import ParserPool

CONFIG = KbConfig(name="kb", chunk_max_characters=1500, chunk_new_after_characters=1200,
                  chunk_combine_under_characters=200, chunk_overlap_characters=0)
ITEMS = [(f"doc-{i}.txt", f"Document {i} talks about rivers and their deltas.".encode(), "text/plain")
         for i in range(6)]


def all_parsed(results, items=ITEMS) -> bool:
    return len(results) == len(items) and all(r.error is None and r.chunks for r in results.values())


def worker_pids(pool: ParserPool) -> list[int]:
    return pool.worker_pids()


def kill_pool_workers(pool: ParserPool) -> None:
    for pid in worker_pids(pool):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)  # let the pool notice


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_worker_killed_while_idle_costs_the_next_batch_nothing():
    with ParserPool(workers=2) as pool:
        assert all_parsed(pool.submit(ITEMS, CONFIG).results())
        kill_pool_workers(pool)
        assert all_parsed(pool.submit(ITEMS, CONFIG).results())


def test_batches_queued_behind_a_dying_worker_are_retried_alone():
    with ParserPool(workers=2) as pool:
        assert all_parsed(pool.submit(ITEMS, CONFIG).results())
        current = pool.submit(ITEMS, CONFIG)
        queued = pool.submit(ITEMS, CONFIG)  # as a run queues the next batch
        kill_pool_workers(pool)
        assert all_parsed(current.results())
        later = pool.submit(ITEMS, CONFIG)  # a fresh pool by now
        assert all_parsed(queued.results())
        assert all_parsed(later.results())


def test_a_pool_of_another_size_never_cancels_queued_work(monkeypatch):
    # A cancelled document would be re-parsed alone: make that an error.
    monkeypatch.setattr(workers, "_isolated", lambda *args: pytest.fail("a document was cancelled"))
    with ParserPool(workers=2) as first:
        queued = first.submit(ITEMS, CONFIG)
        with ParserPool(workers=3) as second:
            assert all_parsed(second.submit(ITEMS, CONFIG).results())
        assert all_parsed(queued.results())


def test_workers_start_at_the_first_batch_and_parse_every_document():
    """No document is parsed in the caller (it would escape the time and memory limits), however
    small the batch or the pool; no worker starts before the first batch."""
    few = ITEMS[:3]
    with ParserPool(workers=2) as pool:
        assert worker_pids(pool) == []
        assert all_parsed(pool.submit(few, CONFIG).results(), few)
        assert worker_pids(pool) and os.getpid() not in worker_pids(pool)
        assert all_parsed(pool.submit(ITEMS, CONFIG).results())
    with ParserPool(workers=1) as single:
        assert all_parsed(single.submit(ITEMS, CONFIG).results())
        assert len(worker_pids(single)) == 1


def test_close_stops_the_workers_and_waits_for_them():
    pool = ParserPool(workers=2)
    assert all_parsed(pool.submit(ITEMS, CONFIG).results())
    pids = worker_pids(pool)
    pool.close()
    assert not any(is_alive(pid) for pid in pids)
    pool.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(ITEMS, CONFIG)


def _parse_in_a_child(done) -> None:
    with ParserPool(workers=2) as pool:
        done.value = all_parsed(pool.submit(ITEMS, CONFIG).results())


def test_a_multiprocessing_child_that_closes_its_pool_exits():
    """A process started by multiprocessing (as Dagster's multiprocess executor starts a step)
    waits at exit for its live children: closing the pool is what lets it end."""
    ctx = multiprocessing.get_context("spawn")
    done = ctx.Value("b", False)
    child = ctx.Process(target=_parse_in_a_child, args=(done,))
    child.start()
    child.join(120)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0 and done.value
