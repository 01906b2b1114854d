"""Retrieval metrics on hand-computed cases, and a real evaluation run on an XQuAD subset."""

import math

import pytest

from quivr_pipelines.core import evaluation
from quivr_pipelines.core.evaluation import RetrievalSet, mrr_at_k, ndcg_at_k, recall_at_k
from quivr_pipelines.core.vectorstore.base import DEFAULT_FUSION, FusionConfig
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
    default = DEFAULT_FUSION.label()
    assert list(by_run) == [("dense", "-"), ("sparse", "-"), ("hybrid", default), ("hybrid", "dbsf")]
    for s in scores:
        assert s.queries == len(rset.queries)
        assert 0.0 <= s.ndcg <= 1.0 and 0.0 <= s.recall <= 1.0 and 0.0 <= s.mrr <= 1.0
        assert len(s.per_query) == s.queries
    assert by_run["dense", "-"].recall > 0.8
    assert by_run["sparse", "-"].recall > 0.8
    for fusion in (default, "dbsf"):
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
        # Qdrant's RRF: sum of 1 / (k + rank - 1) over the lists, k = 20 (the default).
        assert results[0] == [("d2", round(2 / 21, 4)), ("d0", round(1 / 23 + 1 / 20, 4)), ("d1", round(1 / 20, 4))]


# -- BEIR folders -------------------------------------------------------------------------------
TINY_CORPUS = [
    {"_id": "MED-1", "title": "Vitamin D", "text": "Vitamin D deficiency is common in northern winters."},
    {"_id": "MED-2", "title": "", "text": "Green tea catechins and their effect on blood pressure."},
    {"_id": "doc.3/x", "title": "Oranges", "text": "Citrus fruit such as oranges provides vitamin C."},
]


def write_beir(folder, layout: str, corpus=TINY_CORPUS):
    import json as _json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(_json.dumps(row) + "\n" for row in corpus))
    queries = [{"_id": "q1", "text": "vitamin D in winter"}, {"_id": "q2", "text": "tea and blood pressure"},
               {"_id": "q3", "text": "unjudged question"}, {"_id": "q4", "text": "judged only on a missing document"}]
    (folder / "queries.jsonl").write_text("".join(_json.dumps(row) + "\n" for row in queries))
    judgments = "query-id\tcorpus-id\tscore\nq1\tMED-1\t2\nq1\tdoc.3/x\t1\nq2\tMED-2\t1\nq2\tMED-1\t0\nq4\tMED-99\t1\n"
    if layout == "beir":  # BEIR's own: qrels/{train,test}.tsv; test is the split
        (folder / "qrels").mkdir()
        (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq3\tMED-2\t1\n")
        (folder / "qrels" / "test.tsv").write_text(judgments)
    else:  # the shared sets' flat layout
        (folder / "qrels_test.tsv").write_text(judgments)
    return folder


@pytest.mark.parametrize("layout", ["beir", "flat"])
def test_beir_folder_loads_in_both_layouts(tmp_path, layout):
    folder = write_beir(tmp_path / "tiny", layout)
    assert evaluation.is_beir_folder(folder)
    (rset,) = evaluation.load_sets(folder)
    assert rset.name == "tiny"
    assert list(rset.queries) == ["q1", "q2"]  # q3 unjudged (train split only), q4 judged off-corpus
    assert rset.qrels == {"q1": {"MED-1": 2, "doc.3/x": 1}, "q2": {"MED-2": 1}}  # grade 0 dropped
    assert rset.documents["MED-1"] == "Vitamin D\nVitamin D deficiency is common in northern winters."
    assert rset.markdown("MED-1") == "# Vitamin D\n\nVitamin D deficiency is common in northern winters.\n"
    assert rset.markdown("MED-2") == "Green tea catechins and their effect on blood pressure.\n"


def test_beir_folder_without_a_single_qrels_file_is_refused(tmp_path):
    folder = write_beir(tmp_path / "two", "flat")
    (folder / "qrels_dev.tsv").write_text("query-id\tcorpus-id\tscore\n")
    assert evaluation.load_beir(folder).qrels  # with several, the test split
    (folder / "qrels_test.tsv").rename(folder / "qrels_other.tsv")
    with pytest.raises(FileNotFoundError, match="qrels"):
        evaluation.load_beir(folder)
    with pytest.raises(FileNotFoundError, match="not a BEIR folder"):
        evaluation.load_beir(tmp_path / "missing")


def test_root_layout_still_loads_the_shared_sets():
    sets = evaluation.load_sets(DATA, ["nfcorpus"])
    assert [s.name for s in sets] == ["nfcorpus"] and len(sets[0].documents) == 3395


@pytest.mark.parametrize("doc_id", ["MED-10", "Super_Bowl_50__0", "..", ".hidden", "a/b", "../../etc/passwd",
                                    "x y", "ünï", "%41", "a.md", "C:\\temp", "tab\there", "-rf", "~user"])
def test_corpus_file_names_are_safe_and_reversible(doc_id):
    from quivr_pipelines.core.keys import check_object_key

    name = evaluation.corpus_file_name(doc_id)
    assert check_object_key(name) == name
    assert "/" not in name and not name.startswith(".") and name.endswith(".md")
    assert evaluation.corpus_id(name) == doc_id


def test_corpus_file_names_do_not_collide():
    ids = ["a", "A", "a.", "a%2E", "a/", "a%2F", "%", "%25"]
    assert len({evaluation.corpus_file_name(i) for i in ids}) == len(ids)


# -- significance -------------------------------------------------------------------------------
def test_identical_runs_have_p_one():
    from quivr_pipelines.core import evaluation_stats

    scores = {f"q{i}": (i % 7) / 7 for i in range(50)}
    result = evaluation_stats.compare(scores, dict(scores))
    assert (result.queries, result.delta, result.p_value) == (50, 0.0, 1.0)
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)


def test_a_clear_shift_is_significant_and_noise_is_not():
    import numpy as np

    from quivr_pipelines.core import evaluation_stats

    rng = np.random.default_rng(7)
    base = rng.uniform(0, 0.8, 200)
    shifted = base + rng.uniform(0.0, 0.1, 200)  # every query better
    result = evaluation_stats.compare(dict(enumerate(base)), dict(enumerate(shifted)))
    assert result.p_value == pytest.approx(1 / 10_001)  # no sign flip reaches the observed mean
    assert result.delta == pytest.approx(float((shifted - base).mean()))
    assert 0 < result.ci_low < result.delta < result.ci_high
    worse = evaluation_stats.compare(dict(enumerate(shifted)), dict(enumerate(base)))  # two-sided
    assert worse.p_value == result.p_value and worse.delta == pytest.approx(-result.delta)
    jitter = rng.normal(0, 0.1, 200)
    jitter += 0.005 - jitter.mean()  # large per-query changes, mean change +0.005
    noise = evaluation_stats.compare(dict(enumerate(base)), dict(enumerate(base + jitter)))
    assert noise.delta == pytest.approx(0.005)
    assert noise.p_value > 0.3 and noise.ci_low < 0 < noise.ci_high


def test_randomisation_test_matches_the_exact_distribution_and_is_repeatable():
    """Three queries, all +1: of the 8 sign assignments, 2 reach |mean| = 1, so exact p = 0.25."""
    from quivr_pipelines.core import evaluation_stats

    p = evaluation_stats.paired_randomisation_test([0, 0, 0], [1, 1, 1])
    assert p == pytest.approx(0.25, abs=0.02)
    assert p == evaluation_stats.paired_randomisation_test([0, 0, 0], [1, 1, 1])  # fixed seed
    # only the paired queries count
    result = evaluation_stats.compare({"a": 0.0, "b": 0.5, "only-a": 1.0}, {"a": 0.0, "b": 0.5, "only-b": 0.0})
    assert (result.queries, result.p_value) == (2, 1.0)


def test_a_saved_result_compared_with_the_same_run_has_p_one(tmp_path):
    """Per-query scores are saved unrounded: rounded ones differ from the run by noise of one sign
    over hundreds of queries, which the test called significant (p < 0.001 for identical runs)."""
    import json as _json

    from quivr_pipelines.core.evaluation import Score

    per_query = {f"q{i}": ndcg_at_k(["x"] * (i % 9) + ["d"], {"d": 1, "e": 2}) for i in range(300)}
    score = Score("set", "hybrid", "rrf:k=20", 300, 0.5, 0.5, 0.5, 1.0, per_query)
    saved = tmp_path / "run.json"
    saved.write_text(_json.dumps({"scores": [score.as_dict(per_query=True)]}))
    (compared,) = evaluation.compare_baseline([score], evaluation.load_baseline(saved))
    assert (compared.result.queries, compared.result.delta, compared.result.p_value) == (300, 0.0, 1.0)


# -- fusion specs -------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["rrf:k=0", "rrf:k=-5", "rrf:dense=-1", "rrf:dense=0,sparse=0", "rrf:depth=0",
                                  "rrf:depth=5000", "rrf:dense=inf", "rrf:dense=nan", "rrf:kk=3"])
def test_bad_fusion_specs_are_refused(spec):
    with pytest.raises(ValueError):
        evaluation.parse_fusion(spec)


def test_fusion_errors_name_the_bound_and_the_bounds_are_inclusive():
    with pytest.raises(ValueError, match="depth must be an integer from 1 to 1000"):
        FusionConfig(depth=1001)
    with pytest.raises(ValueError, match="expected options k=, dense=, sparse=, depth="):
        evaluation.parse_fusion("rrf:weight=2")
    assert evaluation.parse_fusion("rrf:k=1,dense=0,depth=1000") == FusionConfig(k=1, dense_weight=0.0, depth=1000)


# -- documents from chunk hits -----------------------------------------------------------------
class _SparseOnly:
    """What `retrieval.search` needs of an embedder in sparse mode (no model call)."""

    fingerprint, dimensions = "test:none:3", 3

    def embed(self, texts):
        raise AssertionError("sparse search embeds nothing")


def test_chunk_hits_rank_each_document_at_its_first_chunk_and_search_deeper(tmp_path):
    from quivr_pipelines.core import sparse
    from quivr_pipelines.core.keys import point_id
    from quivr_pipelines.core.vectorstore.base import PointRecord
    from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore

    store = EmbeddedStore(tmp_path / "qdrant")
    store.ensure_collection("c", 3, _SparseOnly.fingerprint)
    store.set_alias(evaluation.KB, "c")
    # "long.md" has 15 chunks about revenue that all outrank the 11 one-chunk documents, so the
    # first 10 hits are one document: the search must go deeper to find 10 documents.
    docs = {"long.md": ["revenue revenue revenue"] * 15}
    docs.update({f"d{i:02d}.md": [f"revenue and {' '.join(['filler'] * (5 + i))}"] for i in range(11)})
    store.replace_documents("c", [
        (evaluation.KB, key, [PointRecord(point_id(evaluation.KB, key, n), [1.0, 0.0, 0.0], sparse.document_vector(t),
                                          {"kb": evaluation.KB, "document_key": key, "chunk_index": n})
                              for n, t in enumerate(texts)]) for key, texts in docs.items()])
    ids = {key: key.removesuffix(".md") for key in docs}
    try:
        ranked = evaluation.ranked_documents(store, _SparseOnly(), evaluation.KB, "revenue", "sparse", None, ids)
        assert ranked == ["long"] + [f"d{i:02d}" for i in range(9)]  # the shortest first
        assert len(ranked) == evaluation.K == len(set(ranked))
        # one point per document: the first search is enough and ids are document keys
        assert evaluation.ranked_documents(store, _SparseOnly(), evaluation.KB, "filler", "sparse", None)[0] == "d10.md"
    finally:
        store.close()


# -- pipeline representation --------------------------------------------------------------------
def test_pipeline_representation_ingests_a_tiny_set_through_the_real_pipeline(settings_env, tmp_path):
    from quivr_pipelines.core.embedding.local import LocalEmbedder
    from quivr_pipelines.core.factory import kb_defaults, open_database

    sentence = "The {n}th paragraph of this long report discusses topic number {n} in plain words. "
    long_text = "".join(sentence.format(n=n) for n in range(60))  # several chunks at the default sizes
    long_text += "Finally the glacier observatory recorded a record melt of the Aletsch glacier."
    corpus = [*TINY_CORPUS, {"_id": "REPORT/long", "title": "Long report", "text": long_text}]
    folder = write_beir(tmp_path / "tiny", "beir", corpus)
    with open(folder / "queries.jsonl", "a") as handle:
        handle.write('{"_id": "q5", "text": "Aletsch glacier melt observatory"}\n')
    with open(folder / "qrels" / "test.tsv", "a") as handle:
        handle.write("q5\tREPORT/long\t1\n")
    (rset,) = evaluation.load_sets(folder)
    db = open_database(settings_env)
    try:
        defaults = kb_defaults(settings_env)
        scores, ingested = evaluation.evaluate_pipeline(rset, LocalEmbedder.load(), db, defaults,
                                                        fusions=[FusionConfig(method="dbsf")])
        assert (ingested.documents, ingested.failed) == (4, {})
        assert ingested.chunks > 4  # the long report was chunked
        by_run = {(s.mode, s.fusion): s for s in scores}
        assert list(by_run) == [("dense", "-"), ("sparse", "-"), ("hybrid", "rrf:k=20"), ("hybrid", "dbsf")]
        assert all(s.representation == "pipeline" and s.queries == 3 for s in scores)
        # the late sentence of the long report is found in its own chunk, mapped back to the corpus id
        assert by_run["sparse", "-"].per_query["q5"] == 1.0
        assert by_run["hybrid", "rrf:k=20"].per_query["q1"] > 0.5
        keys = {row["object_key"] for row in _documents(db)}
        assert evaluation.corpus_file_name("REPORT/long") in keys and "REPORT%2Flong.md" in keys
        # the catalog outlives the throwaway store: a second run re-ingests (force) from the cache
        again, second = evaluation.evaluate_pipeline(rset, LocalEmbedder.load(), db, defaults, modes=["sparse"])
        assert (second.documents, second.chunks) == (4, ingested.chunks)
        assert again[0].per_query == by_run["sparse", "-"].per_query
    finally:
        db.close()


def _documents(db):
    with db.transaction() as conn:
        rows = conn.execute("SELECT object_key FROM documents WHERE kb = %s", (evaluation.KB,)).fetchall()
    return [{"object_key": r[0]} for r in rows]
