"""The two vector store adapters behave the same; the embedded one is shared across processes."""

import multiprocessing
import time

import numpy as np
import pytest
from qdrant_client import QdrantClient

from quivr_pipelines.core import sparse
from quivr_pipelines.core.keys import point_id
from quivr_pipelines.core.vectorstore.base import PointRecord, SearchFilter
from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore
from quivr_pipelines.core.vectorstore.qdrant_server import QdrantServerStore

DIM = 8


def make_points(kb, key, texts, seed=0, content_type="text/plain"):
    rng = np.random.default_rng(seed)
    return [
        PointRecord(
            id=point_id(kb, key, i),
            dense=(lambda v: (v / np.linalg.norm(v)).tolist())(rng.standard_normal(DIM)),
            sparse=sparse.document_vector(text),
            payload={"kb": kb, "document_key": key, "chunk_index": i, "text": text,
                     "content_type": content_type, "ingested_at": "2026-11-01T00:00:00+00:00"},
        )
        for i, text in enumerate(texts)
    ]


@pytest.fixture(params=["embedded", "qdrant-client-local"])
def store(request, tmp_path):
    if request.param == "embedded":
        s = EmbeddedStore(tmp_path / "qdrant")
    else:
        s = QdrantServerStore(QdrantClient(path=str(tmp_path / "local-qdrant")))
    yield s
    s.close()


def test_collection_alias_and_fingerprint(store):
    store.ensure_collection("kb_a__m1", DIM, "local:m1:8")
    store.ensure_collection("kb_a__m1", DIM, "local:m1:8")  # idempotent
    store.set_alias("a", "kb_a__m1")
    assert store.resolve_alias("a") == "kb_a__m1"
    info = store.collection_info("a")
    assert (info.name, info.dimensions, info.fingerprint, info.points) == ("kb_a__m1", DIM, "local:m1:8", 0)
    store.ensure_collection("kb_a__m2", DIM, "local:m2:8")
    store.set_alias("a", "kb_a__m2")  # the swap a re-embedding will do
    assert store.resolve_alias("a") == "kb_a__m2"


def test_replace_document_is_idempotent_and_drops_stale_chunks(store):
    store.ensure_collection("c", DIM, "fp")
    texts = ["alpha bravo", "charlie delta", "echo foxtrot", "golf hotel"]
    store.replace_documents("c", [("kb", "doc.txt", make_points("kb", "doc.txt", texts))])
    store.replace_documents("c", [("kb", "doc.txt", make_points("kb", "doc.txt", texts))])
    store.replace_documents("c", [("kb", "other.txt", make_points("kb", "other.txt", ["india"]))])
    assert store.count("c", "kb", "doc.txt") == 4
    store.replace_document("c", "kb", "doc.txt", make_points("kb", "doc.txt", texts[:2]))
    points = store.document_points("c", "kb", "doc.txt")
    assert [p.payload["chunk_index"] for p in points] == [0, 1]
    assert store.count("c", "kb", "other.txt") == 1
    store.delete_document("c", "kb", "doc.txt")
    assert store.count("c") == 1


def test_search_modes_and_filters(store):
    store.ensure_collection("c", DIM, "fp")
    store.replace_documents("c", [
        ("kb", "reports/q1.txt", make_points("kb", "reports/q1.txt", ["quarterly revenue grew", "staff news"], 1)),
        ("kb", "notes/x.md", make_points("kb", "notes/x.md", ["revenue notes in markdown"], 2, "text/markdown")),
        ("kb2", "other.txt", make_points("kb2", "other.txt", ["revenue of another kb"], 3)),
    ])
    query_dense = make_points("kb", "q", ["quarterly revenue grew"], 1)[0].dense
    for mode in ("dense", "sparse", "hybrid"):
        hits = store.search("c", query_dense, sparse.query_vector("quarterly revenue"), 3,
                            SearchFilter(kb="kb"), mode=mode)
        assert hits and hits[0].payload["text"] == "quarterly revenue grew", mode
        assert all(h.payload["kb"] == "kb" for h in hits)
    hits = store.search("c", query_dense, sparse.query_vector("revenue"), 5,
                        SearchFilter(kb="kb", document_key_prefix="notes/"))
    assert [h.payload["document_key"] for h in hits] == ["notes/x.md"]
    hits = store.search("c", query_dense, sparse.query_vector("revenue"), 5,
                        SearchFilter(kb="kb", content_types=("text/markdown",)))
    assert [h.payload["document_key"] for h in hits] == ["notes/x.md"]


def _writer(root, start, count, ready):
    store = EmbeddedStore(root)
    ready.wait(10)
    for i in range(start, start + count):
        store.replace_document("c", "kb", f"doc-{i}.txt", make_points("kb", f"doc-{i}.txt", [f"text {i}"], i))
    store.close()


def test_embedded_store_is_shared_by_a_reader_and_writer_processes(tmp_path):
    """A long-lived reader (like the query service) and two writer processes (like Dagster runs):
    no 'already accessed' error, no lost write."""
    root = tmp_path / "qdrant"
    reader = EmbeddedStore(root, keep_open=True)
    reader.ensure_collection("c", DIM, "fp")
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    writers = [ctx.Process(target=_writer, args=(root, n * 1000, 15, ready)) for n in range(2)]
    for w in writers:
        w.start()
    ready.set()
    queries = 0
    deadline = time.monotonic() + 120
    while any(w.is_alive() for w in writers) and time.monotonic() < deadline:
        reader.search("c", [0.1] * DIM, sparse.query_vector("text"), 5, mode="hybrid")
        queries += 1
    for w in writers:
        w.join(30)
        assert w.exitcode == 0
    assert reader.count("c") == 30
    assert queries > 0
    reader.close()


def test_a_stuck_holder_gives_a_clear_error_instead_of_a_hang(tmp_path):
    import subprocess
    import sys

    from quivr_pipelines.core.vectorstore.handoff import StoreBusy, StoreHandoff

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path\n"
        "from quivr_pipelines.core.vectorstore.handoff import StoreHandoff\n"
        "h = StoreHandoff(Path(sys.argv[1])); h.acquire(); print('held', flush=True); time.sleep(60)\n"),
        str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreBusy, match=str(holder.pid)):
            StoreHandoff(tmp_path).acquire(timeout=0.5)
    finally:
        holder.kill()
        holder.wait()
    StoreHandoff(tmp_path).acquire(timeout=5)  # released when the holder dies
