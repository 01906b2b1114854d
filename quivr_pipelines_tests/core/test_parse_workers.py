"""Parser worker processes: a dead worker costs at most a retry, never the following batches."""

import os
import signal
import time

from quivr_pipelines.core.catalog.repository import KbConfig
from quivr_pipelines.core.parsing import workers

CONFIG = KbConfig(name="kb", chunk_max_characters=1500, chunk_new_after_characters=1200,
                  chunk_combine_under_characters=200, chunk_overlap_characters=0)
ITEMS = [(f"doc-{i}.txt", f"Document {i} talks about rivers and their deltas.".encode(), "text/plain")
         for i in range(6)]


def all_parsed(results) -> bool:
    return len(results) == len(ITEMS) and all(r.error is None and r.chunks for r in results.values())


def kill_pool_workers() -> None:
    for pid in list(workers._executor._processes):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)  # let the pool notice


def test_a_worker_killed_while_idle_costs_the_next_batch_nothing():
    try:
        assert all_parsed(workers.submit_parse(ITEMS, CONFIG, workers=2).results())
        kill_pool_workers()
        assert all_parsed(workers.submit_parse(ITEMS, CONFIG, workers=2).results())
    finally:
        workers.shutdown_workers()


def test_batches_queued_behind_a_dying_worker_are_retried_alone():
    try:
        assert all_parsed(workers.submit_parse(ITEMS, CONFIG, workers=2).results())
        current = workers.submit_parse(ITEMS, CONFIG, workers=2)
        queued = workers.submit_parse(ITEMS, CONFIG, workers=2)  # as a run queues the next batch
        kill_pool_workers()
        assert all_parsed(current.results())
        later = workers.submit_parse(ITEMS, CONFIG, workers=2)  # a fresh pool by now
        assert all_parsed(queued.results())
        assert all_parsed(later.results())
    finally:
        workers.shutdown_workers()
