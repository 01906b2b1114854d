"""Retrieval quality: nDCG@10, recall@10 and MRR@10 of dense, sparse and hybrid search.

A BEIR-like set (corpus, queries, graded qrels) is written to a throwaway embedded collection
with exactly what ingestion writes (the configured embedder's dense vector, `sparse.document_vector`,
a payload with `kb` and `document_key`, uuid5 point ids), and every query goes through
`retrieval.search`, the function the CLI and the query service call. One corpus document is one
point (the sets' passages are chunk-sized already).

Document embeddings are cached on disk (keyed by embedder fingerprint and the SHA-256 of each
text): the local MiniLM embedded NFCorpus (3,395 abstracts) in about 6.5 minutes on 2 cores
(~9 abstracts/s); later runs of both sets take under half a minute.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from quivr_pipelines.core import retrieval, sparse
from quivr_pipelines.core.keys import point_id
from quivr_pipelines.core.vectorstore.base import DEFAULT_FUSION, FusionConfig, PointRecord

K = 10
MODES = ("dense", "sparse", "hybrid")
DATASETS = ("xquad", "nfcorpus")
KB = "eval"
WRITE_BATCH = 256


# -- data -------------------------------------------------------------------------------------
@dataclass
class RetrievalSet:
    name: str
    documents: dict[str, str]  # document id -> text
    queries: dict[str, str]  # query id -> text (only queries with at least one relevant document)
    qrels: dict[str, dict[str, int]]  # query id -> document id -> grade (> 0)

    def subset(self, limit: int | None) -> RetrievalSet:
        if not limit:
            return self
        ids = list(self.queries)[:limit]
        return RetrievalSet(self.name, self.documents, {q: self.queries[q] for q in ids},
                            {q: self.qrels[q] for q in ids})


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            grade = int(float(row["score"]))
            if grade > 0:
                qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = grade
    return qrels


def _document_text(row: dict) -> str:
    """BEIR's convention: title, then text. XQuAD titles are page names ("Super_Bowl_50")."""
    title = (row.get("title") or "").replace("_", " ").strip()
    return f"{title}\n{row['text']}" if title else row["text"]


def load_set(name: str, root: Path) -> RetrievalSet:
    """`xquad` (../shared/data/retrieval/xquad_en) or `nfcorpus` (BEIR test split)."""
    root = Path(root)
    if name == "xquad":
        folder = root / "xquad_en"
        documents = {row["_id"]: _document_text(row) for row in _jsonl(folder / "passages.jsonl")}
        queries = {row["id"]: row["question"] for row in _jsonl(folder / "qa.jsonl")}
        qrels = _qrels(folder / "qrels.tsv")
    elif name == "nfcorpus":
        folder = root / "nfcorpus"
        documents = {row["_id"]: _document_text(row) for row in _jsonl(folder / "corpus.jsonl")}
        queries = {row["_id"]: row["text"] for row in _jsonl(folder / "queries.jsonl")}
        qrels = _qrels(folder / "qrels_test.tsv")
    else:
        raise ValueError(f"unknown retrieval set {name!r} (expected one of {', '.join(DATASETS)})")
    judged = {q: {d: g for d, g in qrels.get(q, {}).items() if d in documents} for q in queries}
    kept = [q for q in queries if judged[q]]
    return RetrievalSet(name, documents, {q: queries[q] for q in kept}, {q: judged[q] for q in kept})


# -- metrics ----------------------------------------------------------------------------------
def ndcg_at_k(ranked: Sequence[str], grades: dict[str, int], k: int = K) -> float:
    """Graded gains, log2(rank + 1) discount, ideal DCG from all judged documents."""
    dcg = sum(grades.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:k]))
    ideal = sorted(grades.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], grades: dict[str, int], k: int = K) -> float:
    relevant = {doc for doc, g in grades.items() if g > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def mrr_at_k(ranked: Sequence[str], grades: dict[str, int], k: int = K) -> float:
    for rank, doc in enumerate(ranked[:k]):
        if grades.get(doc, 0) > 0:
            return 1.0 / (rank + 1)
    return 0.0


# -- representation ---------------------------------------------------------------------------
def embed_documents(embedder, texts: list[str], cache_dir: Path | None,
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Dense vectors for `texts`, reusing `<cache_dir>/<fingerprint>.npz` (text SHA-256 -> vector)."""
    keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
    cached: dict[str, np.ndarray] = {}
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / (embedder.fingerprint.replace(":", "_").replace("/", "_") + ".npz")
        if path.exists():
            with np.load(path) as data:
                cached = dict(zip(data["keys"].tolist(), data["vectors"]))
    missing = [i for i, key in enumerate(keys) if key not in cached]
    for start in range(0, len(missing), 64):
        batch = missing[start:start + 64]
        vectors = embedder.embed([texts[i] for i in batch]).vectors
        for i, vector in zip(batch, vectors):
            cached[keys[i]] = np.asarray(vector, np.float32)
        if progress:
            progress(min(start + 64, len(missing)), len(missing))
        if path is not None and (start // 64) % 8 == 7:  # a killed run keeps most of its work
            _save_cache(path, cached)
    if path is not None and missing:
        _save_cache(path, cached)
    return np.stack([cached[key] for key in keys]) if keys else np.zeros((0, embedder.dimensions), np.float32)


def _save_cache(path: Path, cached: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, keys=np.array(list(cached)), vectors=np.stack(list(cached.values())))
    tmp.replace(path)


class _QueryCache:
    """The embedder as `retrieval.search` sees it, remembering query vectors across modes."""

    def __init__(self, embedder):
        self._embedder = embedder
        self.fingerprint = embedder.fingerprint
        self.dimensions = embedder.dimensions
        self._vectors: dict[str, np.ndarray] = {}

    def warm(self, texts: Iterable[str]) -> None:
        todo = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        for start in range(0, len(todo), 64):
            batch = todo[start:start + 64]
            self._vectors.update(zip(batch, self._embedder.embed(batch).vectors))

    def embed(self, texts: list[str]):
        from quivr_pipelines.core.embedding.base import EmbeddingBatch

        self.warm(texts)
        return EmbeddingBatch(vectors=np.stack([self._vectors[t] for t in texts]), tokens=0)


def write_collection(store, embedder, rset: RetrievalSet, vectors: np.ndarray) -> str:
    """The set as ingestion would write it: one point per document, id uuid5(kb, key, 0)."""
    collection = f"kb_{KB}__eval"
    store.ensure_collection(collection, embedder.dimensions, embedder.fingerprint)
    store.set_alias(KB, collection)
    items = [
        (KB, doc_id, [PointRecord(
            id=point_id(KB, doc_id, 0), dense=vectors[i].tolist(), sparse=sparse.document_vector(text),
            payload={"kb": KB, "document_key": doc_id, "chunk_index": 0, "text": text,
                     "content_type": "text/plain", "embedding_model": embedder.fingerprint})])
        for i, (doc_id, text) in enumerate(rset.documents.items())
    ]
    for start in range(0, len(items), WRITE_BATCH):
        store.replace_documents(collection, items[start:start + WRITE_BATCH])
    return collection


# -- runs -------------------------------------------------------------------------------------
@dataclass
class Score:
    dataset: str
    mode: str
    fusion: str
    queries: int
    ndcg: float
    recall: float
    mrr: float
    seconds: float
    per_query: dict[str, float] = field(default_factory=dict, repr=False)  # query id -> nDCG@10

    def as_dict(self) -> dict:
        return {"dataset": self.dataset, "mode": self.mode, "fusion": self.fusion, "queries": self.queries,
                f"ndcg@{K}": round(self.ndcg, 4), f"recall@{K}": round(self.recall, 4),
                f"mrr@{K}": round(self.mrr, 4), "seconds": round(self.seconds, 2)}


def score_run(store, embedder, rset: RetrievalSet, mode: str, fusion: FusionConfig | None = None) -> Score:
    started = time.perf_counter()
    ndcg, recall, mrr = {}, [], []
    for qid, text in rset.queries.items():
        hits = retrieval.search(store, embedder, KB, text, top_k=K, mode=mode, fusion=fusion)
        ranked = [h.payload["document_key"] for h in hits]
        ndcg[qid] = ndcg_at_k(ranked, rset.qrels[qid])
        recall.append(recall_at_k(ranked, rset.qrels[qid]))
        mrr.append(mrr_at_k(ranked, rset.qrels[qid]))
    n = max(len(ndcg), 1)
    label = (fusion or DEFAULT_FUSION).label() if mode == "hybrid" else "-"
    return Score(rset.name, mode, label, len(ndcg), sum(ndcg.values()) / n, sum(recall) / n,
                 sum(mrr) / n, time.perf_counter() - started, ndcg)


def evaluate(rset: RetrievalSet, embedder, modes: Sequence[str] = MODES,
             fusions: Sequence[FusionConfig] = (), cache_dir: Path | None = None,
             progress: Callable[[str], None] | None = None) -> list[Score]:
    """Every mode on a throwaway embedded collection; `fusions` adds hybrid runs per variant."""
    from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore

    say = progress or (lambda message: None)
    unknown = set(modes) - set(MODES)
    if unknown:
        raise ValueError(f"unknown mode(s) {sorted(unknown)} (expected {', '.join(MODES)})")
    say(f"{rset.name}: {len(rset.documents)} documents, {len(rset.queries)} queries")
    started = time.perf_counter()
    vectors = embed_documents(embedder, list(rset.documents.values()), cache_dir,
                              lambda done, total: say(f"{rset.name}: embedded {done}/{total} documents"))
    say(f"{rset.name}: document vectors ready in {time.perf_counter() - started:.1f}s")
    queries = _QueryCache(embedder)
    if any(m != "sparse" for m in modes) or fusions:
        queries.warm(rset.queries.values())
    with tempfile.TemporaryDirectory(prefix="quivr-eval-") as tmp:
        store = EmbeddedStore(Path(tmp) / "qdrant", keep_open=True)
        try:
            write_collection(store, embedder, rset, vectors)
            scores = []
            for mode in modes:
                scores.append(score_run(store, queries, rset, mode))
                say(f"{rset.name}: {mode} done")
            for fusion in fusions:
                scores.append(score_run(store, queries, rset, "hybrid", fusion))
                say(f"{rset.name}: hybrid {fusion.label()} done")
            return scores
        finally:
            store.close()


def format_table(scores: Sequence[Score]) -> str:
    rows = [("dataset", "mode", "fusion", "queries", f"nDCG@{K}", f"recall@{K}", f"MRR@{K}")]
    rows += [(s.dataset, s.mode, s.fusion, str(s.queries), f"{s.ndcg:.3f}", f"{s.recall:.3f}", f"{s.mrr:.3f}")
             for s in scores]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_fusion(spec: str) -> FusionConfig:
    """`rrf`, `rrf:k=20`, `rrf:dense=1,sparse=0.5`, `dbsf`, any of them with `depth=50`."""
    method, _, rest = spec.partition(":")
    options = dict(part.split("=", 1) for part in rest.split(",") if part)
    return FusionConfig(method=method.strip().lower(), k=int(options.get("k", 60)),
                        dense_weight=float(options.get("dense", 1.0)),
                        sparse_weight=float(options.get("sparse", 1.0)),
                        depth=int(options["depth"]) if "depth" in options else None)


def default_data_root() -> Path:
    """`../shared/data/retrieval` next to the project (from its root, or from this checkout)."""
    candidates = [Path.cwd().parent / "shared" / "data" / "retrieval",
                  Path(__file__).resolve().parents[2].parent / "shared" / "data" / "retrieval"]
    return next((p for p in candidates if p.is_dir()), candidates[0])


def run(datasets: Sequence[str], embedder, modes: Sequence[str] = MODES, limit: int | None = None,
        fusions: Sequence[FusionConfig] = (), data_root: Path | None = None, cache_dir: Path | None = None,
        progress: Callable[[str], None] | None = None) -> list[Score]:
    root = Path(data_root) if data_root else default_data_root()
    scores: list[Score] = []
    for name in datasets:
        scores += evaluate(load_set(name, root).subset(limit), embedder, modes, fusions, cache_dir, progress)
    return scores
