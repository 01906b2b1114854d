"""Queries during an HNSW build of the embedded engine: on a copy (issue 11) against in place.

Builds one collection (random unit dense vectors + random sparse vectors), copies it, and on each
copy runs a querier process (like the query service: `keep_open`, hybrid queries) before and during
an index build done by this process: `rebuild_index` (copy, build, swap) on one, the old in-place
`optimize()` under the store's lock on the other. Prints latency p50/p95/max and the count of
queries answered, per phase.

    PYTHONPATH=. .venv/bin/python benchmarks/index_rebuild.py --points 20000 --dims 384
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from quivr_pipelines.core.keys import point_id
from quivr_pipelines.core.sparse import SparseVector
from quivr_pipelines.core.vectorstore.base import PointRecord
from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore, _copy_file

CTX = multiprocessing.get_context("spawn")
VOCABULARY = 30_000


def _sparse(rng, terms):
    return SparseVector(indices=sorted(rng.choice(VOCABULARY, terms, replace=False).tolist()),
                        values=rng.uniform(0.1, 1.0, terms).tolist())


def build(root: Path, points: int, dims: int) -> float:
    store = EmbeddedStore(root, keep_open=True)
    store.ensure_collection("c", dims, "bench")
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for start in range(0, points, 1000):
        n = min(1000, points - start)
        vectors = rng.standard_normal((n, dims)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        items = []
        for d in range(0, n, 10):  # documents of 10 chunks
            key = f"doc{start + d}"
            items.append(("kb", key, [PointRecord(point_id("kb", key, i), vectors[d + i].tolist(), _sparse(rng, 20),
                                                  {"kb": "kb", "document_key": key, "chunk_index": i})
                                      for i in range(min(10, n - d))]))
        store.replace_documents("c", items)
    store.close()
    return time.perf_counter() - started


def querier(root, dims, ready, stop, out):
    store = EmbeddedStore(root, keep_open=True)
    rng = np.random.default_rng(1)
    queries = []
    for _ in range(200):
        v = rng.standard_normal(dims)
        queries.append(((v / np.linalg.norm(v)).tolist(), _sparse(rng, 4)))
    log, n = [], 0
    while not stop.is_set():
        begin = time.monotonic()
        store.search("c", *queries[n % len(queries)], 10, mode="hybrid")
        log.append((begin, time.monotonic()))
        n += 1
        ready.set()
    store.close()
    out.put(log)


def measure(root: Path, dims: int, how: str, before_seconds: float) -> dict:
    ready, stop, out = CTX.Event(), CTX.Event(), CTX.Queue()
    process = CTX.Process(target=querier, args=(root, dims, ready, stop, out))
    process.start()
    ready.wait(120)
    time.sleep(before_seconds)
    store = EmbeddedStore(root, keep_open=True)
    started = time.monotonic()
    if how == "copy":
        report = store.rebuild_index("c")
        assert report.rebuilt
        extra = {"copy s": report.copy_seconds, "build s": report.build_seconds, "swap s": report.swap_seconds}
    else:  # the old behaviour: optimize the live shard with the store held
        assert store._run(lambda: store._shard("c").optimize())
        extra = {}
    finished = time.monotonic()
    store.close()
    time.sleep(1.0)
    stop.set()
    log = out.get(timeout=120)
    process.join(60)
    before = [e - b for b, e in log if e < started]
    during = [e - b for b, e in log if b < finished and e > started]
    answered_inside = sum(1 for b, e in log if started <= b and e <= finished)
    return {"how": how, "build wall s": finished - started, "before": before, "during": during,
            "answered inside": answered_inside, **extra}


def pct(values, q):
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--before-seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        new, old = Path(tmp) / "copy", Path(tmp) / "in_place"
        seconds = build(new, args.points, args.dims)
        shutil.copytree(new, old, copy_function=_copy_file)
        print(f"{args.points} points, {args.dims} dims + sparse (20 of {VOCABULARY} terms), written in {seconds:.1f} s; "
              "hybrid queries, top 10, one querier process (keep_open)")
        for result in (measure(new, args.dims, "copy", args.before_seconds),
                       measure(old, args.dims, "in_place", args.before_seconds)):
            b, d = result["before"], result["during"]
            print(f"\n{result['how']}: build call {result['build wall s']:.1f} s"
                  + "".join(f", {k} {v:.2f}" for k, v in result.items() if k.endswith(" s") and k != "build wall s"))
            print(f"  before: {len(b)} queries, p50 {pct(b, 50):.1f} ms, p95 {pct(b, 95):.1f} ms")
            print(f"  during: {len(d)} queries overlapping the build call, {result['answered inside']} answered "
                  f"entirely inside it; p50 {pct(d, 50):.1f} ms, p95 {pct(d, 95):.1f} ms, "
                  f"max {max(d) * 1000 if d else float('nan'):.0f} ms")
            if b and d:
                print(f"  p50 during / before: {statistics.median(d) / statistics.median(b):.1f}x")


if __name__ == "__main__":
    main()
