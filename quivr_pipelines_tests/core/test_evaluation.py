"""Retrieval metrics on hand-computed cases, and a real evaluation run on an XQuAD subset."""

import math

import pytest

from quivr_pipelines.core import evaluation
from quivr_pipelines.core.evaluation import RetrievalSet, mrr_at_k, ndcg_at_k, recall_at_k
from quivr_pipelines.core.vectorstore.base import FusionConfig
from quivr_pipelines_tests.conftest import SHARED_DATA

DATA = SHARED_DATA / "retrieval"


def test_perfect_ranking_scores_one():
    grades = {"a": 2, "b": 1}
    assert ndcg_at_k(["a", "b", "x"], grades) == pytest.approx(1.0)
    assert recall_at_k(["a", "b", "x"], grades) == 1.0
    assert mrr_at_k(["a", "b", "x"], grades) == 1.0


def test_graded_ndcg_by_hand():
    # ranking x, b(1), a(2): DCG = 1/log2(3) + 2/log2(4) = 0.6309 + 1.0;
    # ideal a(2), b(1):      IDCG = 2/log2(2) + 1/log2(3) = 2.0 + 0.6309
    grades = {"a": 2, "b": 1}
    expected = (1 / math.log2(3) + 2 / math.log2(4)) / (2 + 1 / math.log2(3))
    assert ndcg_at_k(["x", "b", "a"], grades) == pytest.approx(expected)
    assert ndcg_at_k(["x", "b", "a"], grades) == pytest.approx(0.6199, abs=1e-4)
    assert ndcg_at_k(["b", "a"], grades) < 1.0  # grades matter, not only membership
    assert mrr_at_k(["x", "b", "a"], grades) == pytest.approx(0.5)


def test_cutoff_and_ideal_from_all_judgments():
    grades = {f"d{i}": 1 for i in range(12)}  # more relevant documents than k
    ranked = [f"d{i}" for i in range(12)]
    assert ndcg_at_k(ranked, grades) == pytest.approx(1.0)
    assert recall_at_k(ranked, grades) == pytest.approx(10 / 12)
    late = ["x"] * 10 + ["d0"]  # relevant only at rank 11: outside @10
    assert ndcg_at_k(late, {"d0": 1}) == 0.0
    assert recall_at_k(late, {"d0": 1}) == 0.0
    assert mrr_at_k(late, {"d0": 1}) == 0.0
    assert ndcg_at_k(["d0"], {"d0": 1, "d1": 1}) == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_sets_load_with_judged_queries_only():
    xquad = evaluation.load_set("xquad", DATA)
    assert (len(xquad.documents), len(xquad.queries)) == (240, 1190)
    nfcorpus = evaluation.load_set("nfcorpus", DATA)
    assert len(nfcorpus.documents) == 3395
    assert 0 < len(nfcorpus.queries) <= 323
    assert all(nfcorpus.qrels[q] and set(nfcorpus.qrels[q]) <= set(nfcorpus.documents) for q in nfcorpus.queries)
    with pytest.raises(ValueError):
        evaluation.load_set("msmarco", DATA)


def test_parse_fusion():
    assert evaluation.parse_fusion("rrf") == FusionConfig()
    assert evaluation.parse_fusion("rrf:k=20,depth=50") == FusionConfig(k=20, depth=50)
    assert evaluation.parse_fusion("rrf:dense=1,sparse=0.5").weights() == [1.0, 0.5]
    with pytest.raises(ValueError):
        evaluation.parse_fusion("dbsf:dense=2")


def _xquad_subset(passages: int) -> RetrievalSet:
    full = evaluation.load_set("xquad", DATA)
    keep = set(list(full.documents)[:passages])
    queries = {q: t for q, t in full.queries.items() if set(full.qrels[q]) <= keep}
    return RetrievalSet("xquad-subset", {d: full.documents[d] for d in full.documents if d in keep},
                        queries, {q: full.qrels[q] for q in queries})


def test_real_run_on_xquad_subset(tmp_path):
    from quivr_pipelines.core.embedding.local import LocalEmbedder

    rset = _xquad_subset(40)
    assert len(rset.queries) > 150
    embedder = LocalEmbedder.load()
    scores = evaluation.evaluate(rset, embedder, fusions=[FusionConfig(method="dbsf")], cache_dir=tmp_path)
    by_run = {(s.mode, s.fusion): s for s in scores}
    assert list(by_run) == [("dense", "-"), ("sparse", "-"), ("hybrid", "rrf:k=60"), ("hybrid", "dbsf")]
    for s in scores:
        assert s.queries == len(rset.queries)
        assert 0.0 <= s.ndcg <= 1.0 and 0.0 <= s.recall <= 1.0 and 0.0 <= s.mrr <= 1.0
        assert len(s.per_query) == s.queries
    assert by_run["dense", "-"].recall > 0.8
    assert by_run["sparse", "-"].recall > 0.8
    for fusion in ("rrf:k=60", "dbsf"):
        assert by_run["hybrid", fusion].recall > 0.9 and by_run["hybrid", fusion].ndcg > 0.8
    # the cache holds every document vector: a second pass embeds nothing
    assert list(tmp_path.glob("*.npz"))
    calls = []

    class Counting:
        fingerprint, dimensions = embedder.fingerprint, embedder.dimensions

        def embed(self, texts):
            calls.append(len(texts))
            return embedder.embed(texts)

    evaluation.embed_documents(Counting(), list(rset.documents.values()), tmp_path)
    assert calls == []


@pytest.mark.parametrize("fusion", [None, FusionConfig(k=10), FusionConfig(dense_weight=0.5),
                                    FusionConfig(method="dbsf"), FusionConfig(depth=2)])
def test_both_stores_fuse_identically(tmp_path, fusion):
    """A bare `Fusion.RRF` means k=2 on Qdrant; the server store must send the k the embedded one uses."""
    from qdrant_client import QdrantClient

    from quivr_pipelines.core import sparse
    from quivr_pipelines.core.keys import point_id
    from quivr_pipelines.core.vectorstore.base import PointRecord
    from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore
    from quivr_pipelines.core.vectorstore.qdrant_server import QdrantServerStore

    texts = ["quarterly revenue grew", "the cat sat on the mat", "revenue forecast for next year", "holiday policy"]
    dense = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.6, 0.8]]
    results = []
    for store in (EmbeddedStore(tmp_path / "embedded"), QdrantServerStore(QdrantClient(path=str(tmp_path / "local")))):
        store.ensure_collection("c", 3, "fp")
        store.replace_documents("c", [("kb", f"d{i}", [PointRecord(
            point_id("kb", f"d{i}", 0), dense[i], sparse.document_vector(text),
            {"kb": "kb", "document_key": f"d{i}", "chunk_index": 0})]) for i, text in enumerate(texts)])
        hits = store.search("c", [0.0, 1.0, 0.0], sparse.query_vector("revenues"), 3, None, "hybrid", fusion)
        results.append([(h.payload["document_key"], round(h.score, 4)) for h in hits])
        store.close()
    assert results[0] == results[1]
    if fusion is None:
        # dense ranks d1, d2, d3, d0; sparse ("revenues" stems to "revenu") ranks d0, d2 (d0 is shorter).
        # Qdrant's RRF: sum of 1 / (k + rank - 1) over the lists, k = 60.
        assert results[0] == [("d2", round(2 / 61, 4)), ("d0", round(1 / 63 + 1 / 60, 4)), ("d1", round(1 / 60, 4))]
