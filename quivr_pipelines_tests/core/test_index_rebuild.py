"""The embedded engine's index is built on a copy: queries go on, writes wait and are kept, a
crash at any step leaves a loadable collection (protocol in core/vectorstore/embedded.py)."""

import multiprocessing
import os
import shutil
import time

import numpy as np
import pytest
from qdrant_edge import (
    Distance,
    EdgeConfig,
    EdgeOptimizersConfig,
    EdgeShard,
    EdgeSparseVectorParams,
    EdgeVectorParams,
    HnswIndexConfig,
    Modifier,
)

from quivr_pipelines.core.keys import point_id
from quivr_pipelines.core.sparse import SparseVector
from quivr_pipelines.core.vectorstore.base import PointRecord
from quivr_pipelines.core.vectorstore.embedded import NEXT, OLD, SHARD, EmbeddedStore

DIM, DOCS, CHUNKS = 32, 300, 10  # 3,000 points
CTX = multiprocessing.get_context("spawn")


def _sparse(rng, terms):
    """Random weights over a 200-term vocabulary: no two points tie on a query, so "the same ids"
    has one answer (tied scores would be cut at the limit in any order)."""
    indices = sorted(rng.choice(200, terms, replace=False).tolist())
    return SparseVector(indices=indices, values=rng.uniform(0.1, 1.0, terms).tolist())


def _points(key, n, seed):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [PointRecord(id=point_id("kb", key, i), dense=vectors[i].tolist(), sparse=_sparse(rng, 8),
                        payload={"kb": "kb", "document_key": key, "chunk_index": i, "text": f"{key} {i}"})
            for i in range(n)]


def _query(n):
    rng = np.random.default_rng(10_000 + n)
    v = rng.standard_normal(DIM)
    return (v / np.linalg.norm(v)).tolist(), _sparse(rng, 3)


@pytest.fixture
def root(tmp_path):
    """3,000 points; a 1 KB indexing threshold so that they get an HNSW graph (the default builds
    none below ~10 MB), set on disk through the engine itself before any store opens it."""
    root = tmp_path / "qdrant"
    store = EmbeddedStore(root)
    store.ensure_collection("c", DIM, "fp")
    store.replace_documents("c", [("kb", f"d{d}", _points(f"d{d}", CHUNKS, d)) for d in range(DOCS)])
    store.close()
    EdgeShard.load(str(root / "collections" / "c" / SHARD), EdgeConfig(
        vectors={"dense": EdgeVectorParams(size=DIM, distance=Distance.Cosine)},
        sparse_vectors={"sparse": EdgeSparseVectorParams(modifier=Modifier.Idf)},
        optimizers=EdgeOptimizersConfig(indexing_threshold=1),
        hnsw_config=HnswIndexConfig(m=32, ef_construct=400, full_scan_threshold=10_000,
                                    max_indexing_threads=1))).close()
    return root


def _querier(root, started, stop, out):
    store = EmbeddedStore(root, keep_open=True)  # like the query service
    log, n = [], 0
    while not stop.is_set():
        dense, sp = _query(n)
        begin = time.monotonic()
        hits = store.search("c", dense, sp, 5)
        log.append((begin, time.monotonic(), len(hits)))
        n += 1
        started.set()
    store.close()
    out.put(log)


def _writer(root, started, stop, out):
    store = EmbeddedStore(root, keep_open=True)  # like an ingestion run
    log, n = [], 0
    while not stop.is_set():
        begin = time.monotonic()
        store.replace_document("c", "kb", f"new{n}", _points(f"new{n}", 2, 50_000 + n))
        log.append((begin, time.monotonic()))
        n += 1
        started.set()
        time.sleep(0.02)
    store.close()
    out.put(log)


def _rebuild_beside(root, target):
    started, stop, out = CTX.Event(), CTX.Event(), CTX.Queue()
    other = CTX.Process(target=target, args=(root, started, stop, out))
    other.start()
    assert started.wait(60)
    store = EmbeddedStore(root, keep_open=True)  # like the vector_indexes run
    report = store.rebuild_index("c")
    time.sleep(0.3)  # the other process gets the store back once more
    stop.set()
    log = out.get(timeout=60)
    other.join(30)
    assert other.exitcode == 0
    return store, report, log


def test_queries_are_answered_while_the_index_is_built(root):
    store, report, log = _rebuild_beside(root, _querier)
    assert report.rebuilt and report.points == DOCS * CHUNKS
    assert all(hits == 5 for _, _, hits in log)
    inside = [q for q in log if report.build_started < q[0] and q[1] < report.build_finished]
    assert inside, "no query was answered while the copy was being indexed"
    assert not store.optimize("c")  # the live shard is the indexed copy: nothing left to build
    store.close()


def test_a_write_during_the_rebuild_waits_and_is_kept(root):
    store, report, log = _rebuild_beside(root, _writer)
    assert report.rebuilt
    # fenced: no write ran inside the build, and one was in flight across its end (it waited)
    assert not [w for w in log if report.build_started < w[0] and w[1] < report.build_finished]
    assert [w for w in log if w[0] < report.build_finished < w[1]]
    assert store.count("c") == DOCS * CHUNKS + 2 * len(log)
    assert all(store.count("c", "kb", f"new{n}") == 2 for n in range(len(log)))
    store.close()


def _results(store):
    return [[h.id for h in store.search("c", *_query(n), 10, mode=mode)]
            for n in range(20) for mode in ("dense", "sparse", "hybrid")]


def test_results_are_the_same_before_and_after_the_rebuild(root):
    store = EmbeddedStore(root)
    before = _results(store)
    assert store.optimize("c")
    assert _results(store) == before
    store.close()


def _crashing_rebuild(root, crash_at):
    """A fault injected at one step of the protocol: the process dies there (os._exit)."""
    from quivr_pipelines.core.vectorstore import embedded

    if crash_at == "copy":
        copied = []
        real_copy = embedded._copy_file

        def copy_file(source, target):
            copied.append(source)
            if len(copied) == 5:
                os._exit(3)
            real_copy(source, target)
        embedded._copy_file = copy_file
    elif crash_at == "build":
        def build(path):
            EdgeShard.load(str(path)).optimize()
            os._exit(3)  # built but never closed or swapped in
        embedded._build = build
    else:
        renames = []
        real_replace = os.replace

        def replace(source, target):
            renames.append(source)
            if (crash_at == "between_renames" and len(renames) == 2) or (
                    crash_at == "before_cleanup" and len(renames) == 3):
                os._exit(3)
            real_replace(source, target)
        embedded.os.replace = replace
        if crash_at == "before_cleanup":
            embedded._fsync = lambda path: os._exit(3) if (path / SHARD).exists() and (path / OLD).exists() \
                else None
    EmbeddedStore(root).rebuild_index("c")


@pytest.mark.parametrize("crash_at, left", [
    ("copy", {SHARD, NEXT}), ("build", {SHARD, NEXT}),
    ("between_renames", {OLD, NEXT}), ("before_cleanup", {SHARD, OLD})])
def test_a_rebuild_that_dies_leaves_a_loadable_collection(root, crash_at, left):
    store = EmbeddedStore(root)
    before = _results(store)
    store.close()
    crashed = CTX.Process(target=_crashing_rebuild, args=(root, crash_at))
    crashed.start()
    crashed.join(60)
    assert crashed.exitcode == 3
    directory = root / "collections" / "c"
    assert {p.name for p in directory.iterdir() if p.name.startswith("shard")} == left
    store = EmbeddedStore(root)
    assert store.count("c") == DOCS * CHUNKS
    assert _results(store) == before
    assert {p.name for p in directory.iterdir() if p.name.startswith("shard")} == {SHARD}
    store.replace_document("c", "kb", "after", _points("after", 1, 7))  # writable again
    assert store.count("c") == DOCS * CHUNKS + 1
    store.close()
    shutil.rmtree(root)
