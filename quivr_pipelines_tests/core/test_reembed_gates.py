"""The re-embedding gates on real engines: qdrant-edge, qdrant-client's local mode, the local
MiniLM model, PostgreSQL for the catalog's expected counts, a folder and S3 (moto) for golden sets.

The corpus is 24 XQuAD passages (shared data, read at test time), each cut into chunks of two
sentences: a document is a passage, its chunks its sentence pairs.
"""

from __future__ import annotations

import json
import re
import warnings
import zlib
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_edge import PayloadSchemaType, UpdateOperation

from quivr_pipelines.core import generations, sparse
from quivr_pipelines.core.catalog.database import Database
from quivr_pipelines.core.catalog.repository import DocumentRecord, default_kb_config, ensure_kb, record_documents
from quivr_pipelines.core.errors import DocumentStatus
from quivr_pipelines.core.keys import point_id
from quivr_pipelines.core.objects import LocalFolderStore, S3Store
from quivr_pipelines.core.reembed_gates import (
    GOLDEN_SET_KEY,
    GoldenQuery,
    check_dimensions,
    check_documents,
    check_fingerprint,
    check_payload_indexes,
    check_retrieval_quality,
    golden_set_from_chunks,
    load_golden_set,
    score_golden_set,
    usable_sentence,
)
from quivr_pipelines.core.vectorstore.base import PointRecord
from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore
from quivr_pipelines.core.vectorstore.qdrant_server import QdrantServerStore

PASSAGES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "retrieval" / "xquad_en" / "passages.jsonl"
KB = "gates"
MODEL = "local:all-MiniLM-L6-v2:384"
DIM = 384


@cache
def corpus(limit: int = 24) -> dict[str, list[str]]:
    """document key -> chunk texts: one passage per title (distinct topics), two sentences a chunk."""
    docs: dict[str, list[str]] = {}
    for line in PASSAGES.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        key = f"{row['title']}.txt"
        if key in docs:
            continue
        sentences = re.split(r"(?<=[.!?])\s+", row["text"].strip())
        docs[key] = [" ".join(sentences[i:i + 2]) for i in range(0, len(sentences), 2)]
        if len(docs) == limit:
            break
    return docs


@pytest.fixture(scope="module")
def embedder():
    from quivr_pipelines.core.embedding.local import LocalEmbedder

    return LocalEmbedder.load()


@pytest.fixture(scope="module")
def vectors(embedder) -> dict[str, np.ndarray]:
    """The corpus's real dense vectors, computed once for the module."""
    return {key: embedder.embed(chunks).vectors for key, chunks in corpus().items()}


def noise(key: str, count: int) -> np.ndarray:
    """Random unit vectors: what a broken embedding call would have written."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    v = rng.standard_normal((count, DIM))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def write(store, collection, docs, dense=None, model=MODEL, dims=DIM, payload_model=None):
    """Points as ingestion writes them; `dense(key, n)` gives a document's vectors (noise by default)."""
    store.ensure_collection(collection, dims, model)
    items = []
    for key, chunks in docs.items():
        vecs = dense(key, len(chunks)) if dense else noise(key, len(chunks))[:, :dims]
        items.append((KB, key, [PointRecord(
            id=point_id(KB, key, i), dense=[float(x) for x in vecs[i]], sparse=sparse.document_vector(text),
            payload={"kb": KB, "document_key": key, "chunk_index": i, "text": text, "content_type": "text/plain",
                     "ingested_at": "2026-12-01T00:00:00+00:00", "embedding_model": payload_model or model})
            for i, text in enumerate(chunks)]))
    store.replace_documents(collection, items)


def gen(collection, generation=2, model=MODEL, dims=DIM, state="building"):
    return generations.Generation(kb=KB, generation=generation, collection=collection, fingerprint=model,
                                  dimensions=dims, state=state)


@pytest.fixture(params=["embedded", "qdrant-client-local"])
def store(request, tmp_path):
    if request.param == "embedded":
        s = EmbeddedStore(tmp_path / "qdrant")
    else:
        s = QdrantServerStore(QdrantClient(path=str(tmp_path / "local-qdrant")))
    yield s
    s.close()


def small_corpus(n=4):
    return dict(list(corpus().items())[:n])


# -- documents ----------------------------------------------------------------------------------
def test_documents_gate_passes_when_every_count_matches(store):
    docs = small_corpus()
    write(store, "c", docs)
    result = check_documents(store, KB, gen("c"), {k: len(v) for k, v in docs.items()})
    assert result.passed and result.name == "documents_complete"
    assert result.metadata["points_found"] == sum(len(v) for v in docs.values())
    json.dumps(result.metadata)


@pytest.mark.parametrize("fault, listed", [("missing", "missing"), ("one_more", "wrong_counts"),
                                            ("one_less", "wrong_counts"), ("extra", "extra"),
                                            ("unrecorded", "unrecorded")])
def test_documents_gate_fails_at_each_boundary(store, fault, listed):
    docs = small_corpus()
    write(store, "c", docs)
    expected = {k: len(v) for k, v in docs.items()}
    key = next(iter(docs))
    if fault == "missing":
        store.delete_document("c", KB, key)
    elif fault == "one_more":
        expected[key] += 1
    elif fault == "one_less":
        expected[key] -= 1
    elif fault == "extra":
        del expected[key]
    else:
        expected[key] = -1
    result = check_documents(store, KB, gen("c"), expected)
    assert not result.passed
    found = result.metadata[listed]
    assert [f["document_key"] if isinstance(f, dict) else f for f in found] == [key]
    assert key in result.description and key in result.metadata["table"]
    json.dumps(result.metadata)


def test_documents_gate_with_the_catalogs_expected_counts(store, settings_env, postgres_dsn, db_schema):
    """`generations.expected_chunk_counts` from a real catalog: a copy expects the catalog's
    counts, a re-chunking what it recorded (-1 for a document it has no row for)."""
    docs = small_corpus()
    write(store, "c", docs)
    db = Database(postgres_dsn, schema=db_schema)
    try:
        ensure_kb(db, KB, default_kb_config(settings_env))
        record_documents(db, [DocumentRecord(kb=KB, object_key=k, status=DocumentStatus.INGESTED,
                                             chunk_count=len(v)) for k, v in docs.items()])
        copy = gen("c")
        assert check_documents(store, KB, copy, generations.expected_chunk_counts(db, copy)).passed
        building = generations.start_building(
            db, KB, fingerprint=MODEL, dimensions=DIM, embedder_spec="local", chunking={}, mode="rechunk",
            source_generation=None, run_id=None)
        rechunk = generations.Generation(**{**copy.__dict__, "mode": "rechunk", "generation": building.generation})
        keys = list(docs)
        generations.record_generation_documents(db, KB, rechunk.generation, [
            {"object_key": k, "status": "ingested", "chunk_count": len(docs[k])} for k in keys[1:]])
        result = check_documents(store, KB, rechunk, generations.expected_chunk_counts(db, rechunk))
        assert not result.passed and result.metadata["unrecorded"] == [keys[0]]
    finally:
        db.close()


# -- collection properties ------------------------------------------------------------------------
def test_dimensions_gate(store):
    store.ensure_collection("c", 8, MODEL)
    assert check_dimensions(store, gen("c", dims=8), 8).passed
    result = check_dimensions(store, gen("c", dims=8), 9)
    assert not result.passed and "8-dimensional" in result.description and "9" in result.description
    assert not check_dimensions(store, gen("absent"), 8).passed


def test_fingerprint_gate_passes_and_fails_on_the_collection(store):
    write(store, "c", small_corpus(2))
    result = check_fingerprint(store, gen("c"), MODEL)
    assert result.passed and result.metadata["points_sampled"] > 0
    result = check_fingerprint(store, gen("c"), "openai:text-embedding-3-small:384")
    assert not result.passed and "created for " + MODEL in result.description


def test_fingerprint_gate_fails_on_the_points_payload(store):
    """A collection created for the target, written by a process with another model."""
    docs = small_corpus(3)
    write(store, "c", {k: docs[k] for k in list(docs)[:2]})
    write(store, "c", {k: docs[k] for k in list(docs)[2:]}, payload_model="local:other:384")
    result = check_fingerprint(store, gen("c"), MODEL)
    assert not result.passed and "local:other:384" in result.description
    assert {w["embedding_model"] for w in result.metadata["wrong_points"]} == {"local:other:384"}
    assert result.metadata["points_wrong"] == len(docs[list(docs)[2]])


def test_payload_index_gate_on_the_embedded_store(tmp_path):
    store = EmbeddedStore(tmp_path / "qdrant")
    try:
        store.ensure_collection("c", 8, MODEL)
        assert check_payload_indexes(store, "c").passed
        shard = store._shard("c")  # no store method drops an index: inject the fault in the engine
        shard.update(UpdateOperation.delete_field_index("content_type"))
        shard.update(UpdateOperation.delete_field_index("chunk_index"))
        shard.update(UpdateOperation.create_field_index("chunk_index", PayloadSchemaType.Keyword))
        result = check_payload_indexes(store, "c")
        assert not result.passed
        assert result.metadata["missing"] == ["content_type"]
        assert result.metadata["wrong_type"] == [{"field": "chunk_index", "expected": "integer", "found": "keyword"}]
        assert "content_type" in result.description and "chunk_index" in result.metadata["table"]
    finally:
        store.close()


def test_payload_index_gate_on_the_server_store_reports_what_the_client_reports(tmp_path):
    """qdrant-client's local mode keeps no payload index: every index is reported missing."""
    store = QdrantServerStore(QdrantClient(location=":memory:"))
    try:
        # qdrant-client warns that payload indexes have no effect here, once per process: not asserted
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            store.ensure_collection("c", 8, MODEL)
        assert store.payload_indexes("c") == {}
        result = check_payload_indexes(store, "c")
        assert not result.passed and len(result.metadata["missing"]) == 6
    finally:
        store.close()


# -- golden sets ----------------------------------------------------------------------------------
@pytest.mark.parametrize("sentence, usable", [
    ("The Panthers defense gave up just 308 points, ranking sixth in the league.", True),
    ("Results of the 2015 season", False),  # a heading: no sentence end
    ("It rained all day.", False),  # too short
    (" ".join(["word"] * 41) + ".", False),  # too long
    ("See https://example.com/docs for the full list of the supported formats.", False),
    ("Copyright 2024 Example Corporation, and its affiliates, worldwide and forever.", False),
    ("THE COMPANY SHALL NOT BE LIABLE FOR ANY DAMAGES WHATSOEVER HERE.", False),
    ("| 2023 | 4.5 | 3.2 | 7.7 | 1.0 | 2.2 | 9.1 | 0.3 |.", False),
])
def test_usable_sentence(sentence, usable):
    assert usable_sentence(sentence) is usable


def test_golden_set_is_deterministic_and_points_at_real_documents(store):
    docs = corpus()
    write(store, "c", docs)
    first = golden_set_from_chunks(store, KB, "c", size=10, seed=7)
    assert first == golden_set_from_chunks(store, KB, "c", size=10, seed=7)
    assert first != golden_set_from_chunks(store, KB, "c", size=10, seed=8)
    assert len(first) == 10 and len({q.document_key for q in first}) == 10  # one per document
    for q in first:
        assert q.query in docs[q.document_key][q.chunk_index] and usable_sentence(q.query)


def test_golden_set_of_a_small_kb_is_smaller_and_skips_chunks_without_a_sentence(store):
    docs = {**small_corpus(2), "headings.md": ["Annual report", "Contents", "Revenue by segment"]}
    write(store, "c", docs)
    queries = golden_set_from_chunks(store, KB, "c", size=50)
    assert 2 < len(queries) <= 6  # up to three chunks of each of the two documents with sentences
    assert {q.document_key for q in queries} == set(list(docs)[:2])
    assert len({q.query for q in queries}) == len(queries)


def test_golden_set_round_trips_through_its_dict():
    q = GoldenQuery("a question about things", "a.txt", ("b.txt",), 3)
    assert GoldenQuery.from_dict(json.loads(json.dumps(q.as_dict()))) == q


@pytest.fixture(params=["local", "s3"])
def object_store(request, tmp_path):
    if request.param == "local":
        return LocalFolderStore(tmp_path / "root")
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Store(bucket, prefix="tenants/acme", endpoint_url=server, region="us-east-1")


def test_load_golden_set(object_store):
    assert load_golden_set(object_store, KB) is None
    lines = [{"query": "who won the game?", "document_key": "a.txt"}, {},
             {"query": "where was it played?", "relevant": ["b.txt", "c.txt"]}]
    text = "\n".join("" if not row else json.dumps(row) for row in lines) + "\n"
    object_store.put(KB, GOLDEN_SET_KEY, text.encode())
    object_store.put(KB, "a.txt", b"a document")
    assert load_golden_set(object_store, KB) == [GoldenQuery("who won the game?", "a.txt"),
                                                 GoldenQuery("where was it played?", "b.txt", ("c.txt",))]
    assert [o.key for o in object_store.list_objects(KB)] == ["a.txt"]  # never ingested


@pytest.mark.parametrize("bad_line, message", [
    ('{"query": "who won?"', "line 2"),
    ('["a list"]', "JSON object"),
    ('{"query": "", "document_key": "a.txt"}', '"query"'),
    ('{"query": "who won?"}', 'needs "document_key" or "relevant"'),
    ('{"query": "who won?", "relevant": "a.txt"}', '"relevant"'),
])
def test_a_malformed_golden_set_names_its_line(object_store, bad_line, message):
    good = json.dumps({"query": "who won the game?", "document_key": "a.txt"})
    object_store.put(KB, GOLDEN_SET_KEY, f"{good}\n{bad_line}\n{good}\n".encode())
    with pytest.raises(ValueError, match=re.escape(message)) as excinfo:
        load_golden_set(object_store, KB)
    assert "line 2" in str(excinfo.value)


def test_a_golden_set_larger_than_the_limit_is_refused(object_store):
    object_store.put(KB, GOLDEN_SET_KEY, b'{"query": "q", "document_key": "a.txt"}\n' * 100)
    with pytest.raises(ValueError, match="larger than"):
        load_golden_set(object_store, KB, max_bytes=1000)


# -- retrieval quality ----------------------------------------------------------------------------
@pytest.fixture
def generations_pair(store, vectors):
    """Serving: the real embedding. Building: the same texts and sparse vectors, noise as dense."""
    docs = corpus()
    write(store, "serving", docs, dense=lambda key, n: vectors[key])
    write(store, "noise", docs)
    queries = golden_set_from_chunks(store, KB, "serving", size=24, seed=1)
    return store, gen("serving", 1, state="serving"), gen("noise"), queries


def test_noise_vectors_fail_the_quality_gate(generations_pair, embedder):
    store, serving, building, queries = generations_pair
    result = check_retrieval_quality(store, KB, serving, building, embedder, embedder, queries)
    assert not result.passed, result.description
    assert result.metadata["delta"]["ndcg@10"] < -0.02
    assert result.metadata["serving"]["ndcg@10"] > 0.9  # the set is answerable: the serving side finds it
    assert 0 < len(result.metadata["worst_queries"]) <= 10
    assert "noise" in result.description and "ndcg@10" in result.description
    json.dumps(result.metadata)


def test_an_identical_copy_passes_the_quality_gate(generations_pair, embedder, vectors):
    store, serving, _, queries = generations_pair
    write(store, "copy", corpus(), dense=lambda key, n: vectors[key])
    result = check_retrieval_quality(store, KB, serving, gen("copy"), embedder, embedder, queries, margin=0.0)
    assert result.passed, result.description
    assert result.metadata["delta"] == {"recall@10": 0.0, "ndcg@10": 0.0}
    assert result.metadata["worst_queries"] == []


def test_the_margin_is_a_boundary(generations_pair, embedder):
    """A drop of exactly the margin passes; a margin just under it fails."""
    store, serving, building, queries = generations_pair
    drop = -min(check_retrieval_quality(store, KB, serving, building, embedder, embedder, queries)
                .metadata["delta"].values())
    assert check_retrieval_quality(store, KB, serving, building, embedder, embedder, queries, margin=drop).passed
    assert not check_retrieval_quality(store, KB, serving, building, embedder, embedder, queries,
                                       margin=drop - 0.001).passed


def test_too_few_queries_fail_and_say_so(generations_pair, embedder):
    store, serving, building, queries = generations_pair
    result = check_retrieval_quality(store, KB, serving, serving, embedder, embedder, queries[:4])
    assert not result.passed and "Only 4 golden queries" in result.description


def test_an_embedder_of_another_model_cannot_be_compared(generations_pair, embedder):
    store, serving, _, queries = generations_pair
    store.ensure_collection("other", DIM, "openai:text-embedding-3-small:384")
    result = check_retrieval_quality(store, KB, serving, gen("other", model="openai:text-embedding-3-small:384"),
                                     embedder, embedder, queries)
    assert not result.passed and "Cannot compare" in result.description


def test_score_deduplicates_chunks_to_documents(generations_pair, embedder):
    store, serving, _, queries = generations_pair
    scores = score_golden_set(store, embedder, KB, serving.collection, queries[:5], mode="dense")
    assert scores["queries"] == 5 and scores["mode"] == "dense"
    for row in scores["per_query"]:
        assert row["rank"] is not None and row["recall@10"] == 1.0
