"""Retrieval quality: nDCG@10, recall@10 and MRR@10 of dense, sparse and hybrid search.

A BEIR-like set (corpus, queries, graded qrels) is written to a throwaway embedded collection
with exactly what ingestion writes (the configured embedder's dense vector, `sparse.document_vector`,
a payload with `kb` and `document_key`, uuid5 point ids), and every query goes through
`retrieval.search`, the function the CLI and the query service call.

Two representations of a set (`--representation`):
- `points` (the default): one corpus document is one point, its text embedded whole. Fast (cached
  vectors, no parsing) and independent of parsing and chunking, so it isolates retrieval and
  fusion; the shared sets' passages are about chunk-sized already.
- `pipeline`: each corpus document is written as a Markdown file ("# {title}\n\n{text}", named
  by `corpus_file_name`) into a KB of a throwaway local object store and ingested by
  `pipeline.ingest_in_batches`, the path of Dagster's ingestion asset (parsing, chunking,
  embedding with the catalog's embedding cache, sparse vectors, payload), into a throwaway
  embedded store. Chunk hits map back to corpus ids; a document ranks at its first chunk. This
  measures chunking changes. The catalog (KB row, document rows, embedding cache) is a
  persistent schema, so a second run embeds nothing that did not change.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np

from quivr_pipelines.core import evaluation_stats, retrieval, sparse
from quivr_pipelines.core.keys import point_id
from quivr_pipelines.core.vectorstore.base import DEFAULT_FUSION, FusionConfig, PointRecord

K = 10
MODES = ("dense", "sparse", "hybrid")
DATASETS = ("xquad", "nfcorpus")
REPRESENTATIONS = ("points", "pipeline")
KB = "eval"
WRITE_BATCH = 256
# Chunk hits are deduplicated to documents: a query asks for K, then for more (up to the
# query service's evaluation cap) until K distinct documents are found or the KB has no more.
SEARCH_DEPTHS = (K, 3 * K, 100)


# -- data -------------------------------------------------------------------------------------
@dataclass
class RetrievalSet:
    name: str
    documents: dict[str, str]  # document id -> text
    queries: dict[str, str]  # query id -> text (only queries with at least one relevant document)
    qrels: dict[str, dict[str, int]]  # query id -> document id -> grade (> 0)
    titles: dict[str, str] = field(default_factory=dict)  # document id -> title (when it has one)
    bodies: dict[str, str] = field(default_factory=dict)  # document id -> text without its title

    def subset(self, limit: int | None) -> RetrievalSet:
        if not limit:
            return self
        ids = list(self.queries)[:limit]
        return RetrievalSet(self.name, self.documents, {q: self.queries[q] for q in ids},
                            {q: self.qrels[q] for q in ids}, self.titles, self.bodies)

    def markdown(self, doc_id: str) -> str:
        """The document as the pipeline representation writes it: "# {title}\n\n{text}"."""
        title = self.titles.get(doc_id, "")
        body = self.bodies.get(doc_id, self.documents[doc_id])
        return f"# {title}\n\n{body}\n" if title else f"{body}\n"


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR's TSV (`query-id corpus-id score`); a header row is optional (TREC-style files have
    none)."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or (number == 1 and row[0].strip().lower() in ("query-id", "query_id", "qid")):
                continue
            if len(row) < 3:
                raise ValueError(f"{path}:{number}: expected query-id, corpus-id and score separated by tabs")
            grade = int(float(row[-1]))
            if grade > 0:
                qrels.setdefault(row[0], {})[row[-2]] = grade
    return qrels


def _title(row: dict) -> str:
    """XQuAD titles are page names ("Super_Bowl_50")."""
    return (row.get("title") or "").replace("_", " ").strip()


def _document_text(row: dict) -> str:
    """BEIR's convention: title, then text."""
    title = _title(row)
    return f"{title}\n{row['text']}" if title else row["text"]


def _build(name: str, rows: list[dict], queries: dict[str, str], qrels: dict[str, dict[str, int]]) -> RetrievalSet:
    """Only queries with at least one judged document of the corpus are kept."""
    documents = {str(row["_id"]): _document_text(row) for row in rows}
    titles = {str(row["_id"]): _title(row) for row in rows if _title(row)}
    bodies = {str(row["_id"]): row["text"] for row in rows}
    judged = {q: {d: g for d, g in qrels.get(q, {}).items() if d in documents} for q in queries}
    kept = [q for q in queries if judged[q]]
    return RetrievalSet(name, documents, {q: queries[q] for q in kept}, {q: judged[q] for q in kept},
                        titles, bodies)


def is_beir_folder(folder: Path) -> bool:
    return (Path(folder) / "corpus.jsonl").is_file() and (Path(folder) / "queries.jsonl").is_file()


def beir_qrels_file(folder: Path) -> Path:
    """BEIR's own layout (`qrels/test.tsv`), or one `qrels*.tsv` beside corpus.jsonl (`qrels.tsv`,
    `qrels_test.tsv`; with several, the test split)."""
    folder = Path(folder)
    if (folder / "qrels" / "test.tsv").is_file():
        return folder / "qrels" / "test.tsv"
    found = sorted(folder.glob("qrels*.tsv"))
    if len(found) > 1:
        found = [p for p in found if "test" in p.stem] or found
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise FileNotFoundError(f"{folder}: expected qrels/test.tsv or one qrels*.tsv (found {names})")
    return found[0]


def load_beir(folder: Path, name: str | None = None) -> RetrievalSet:
    """A BEIR-format folder: corpus.jsonl (`_id`, `title`, `text`), queries.jsonl (`_id`, `text`)
    and qrels (see `beir_qrels_file`). The set is named after the folder."""
    folder = Path(folder)
    if not is_beir_folder(folder):
        raise FileNotFoundError(f"{folder}: not a BEIR folder (expected corpus.jsonl and queries.jsonl)")
    queries = {str(row["_id"]): row["text"] for row in _jsonl(folder / "queries.jsonl")}
    return _build(name or folder.resolve().name, _jsonl(folder / "corpus.jsonl"), queries,
                  _qrels(beir_qrels_file(folder)))


def load_set(name: str, root: Path) -> RetrievalSet:
    """`xquad` (../shared/data/retrieval/xquad_en) or `nfcorpus` (BEIR test split)."""
    root = Path(root)
    if name == "xquad":
        folder = root / "xquad_en"
        queries = {row["id"]: row["question"] for row in _jsonl(folder / "qa.jsonl")}
        return _build(name, _jsonl(folder / "passages.jsonl"), queries, _qrels(folder / "qrels.tsv"))
    if name == "nfcorpus":
        return load_beir(root / "nfcorpus", "nfcorpus")
    raise ValueError(f"unknown retrieval set {name!r} (expected one of {', '.join(DATASETS)})")


def load_sets(data: Path, datasets: Sequence[str] = DATASETS) -> list[RetrievalSet]:
    """`data` is a BEIR folder (one set, `datasets` not used) or the root of the shared sets."""
    if is_beir_folder(data):
        return [load_beir(data)]
    return [load_set(name, data) for name in datasets]


# -- file names of corpus documents (pipeline representation) -----------------------------------
def corpus_file_name(doc_id: str) -> str:
    """A corpus id as a safe object key, reversible by `corpus_id`: percent-encoded (no '/', no
    '.', so no '..' nor hidden file), then `.md`. "MED-10" -> "MED-10.md", "a/b.c" -> "a%2Fb%2Ec.md"."""
    return quote(doc_id, safe="-_~").replace(".", "%2E") + ".md"


def corpus_id(file_name: str) -> str:
    if not file_name.endswith(".md"):
        raise ValueError(f"{file_name!r} is not a corpus file name")
    return unquote(file_name[:-3])


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
    representation: str = "points"

    @property
    def run_key(self) -> tuple[str, str, str, str]:
        """What a baseline result is matched on."""
        return self.dataset, self.representation, self.mode, self.fusion

    def as_dict(self, per_query: bool = False) -> dict:
        row = {"dataset": self.dataset, "representation": self.representation, "mode": self.mode,
               "fusion": self.fusion, "queries": self.queries, f"ndcg@{K}": round(self.ndcg, 4),
               f"recall@{K}": round(self.recall, 4), f"mrr@{K}": round(self.mrr, 4),
               "seconds": round(self.seconds, 2)}
        if per_query:
            # unrounded: a rounded baseline differs from the same run by rounding noise, which a
            # paired test over 1,000 queries calls significant (every difference has one sign)
            row[f"per_query_ndcg@{K}"] = dict(self.per_query)
        return row


def ranked_documents(store, embedder, kb: str, text: str, mode: str, fusion: FusionConfig | None,
                     corpus_ids: Mapping[str, str] | None = None) -> list[str]:
    """The first K distinct corpus ids of a query, in the order of their first hit. With chunks
    (`corpus_ids`: document key -> corpus id) one document can fill several ranks, so the
    search goes deeper (SEARCH_DEPTHS) until K documents are found or there are no more hits.
    The fusion's candidate depth follows each `top_k` as it does for a client asking for it."""
    ranked: list[str] = []
    for depth in SEARCH_DEPTHS:
        hits = retrieval.search(store, embedder, kb, text, top_k=depth, mode=mode, fusion=fusion)
        keys = [h.payload["document_key"] for h in hits]
        ids = keys if corpus_ids is None else [corpus_ids.get(k) for k in keys]
        ranked = [doc for doc in dict.fromkeys(ids) if doc is not None]
        if len(ranked) >= K or len(hits) < depth:
            break
    return ranked[:K]


def score_run(store, embedder, rset: RetrievalSet, mode: str, fusion: FusionConfig | None = None,
              corpus_ids: Mapping[str, str] | None = None, representation: str = "points") -> Score:
    started = time.perf_counter()
    ndcg, recall, mrr = {}, [], []
    for qid, text in rset.queries.items():
        ranked = ranked_documents(store, embedder, KB, text, mode, fusion, corpus_ids)
        ndcg[qid] = ndcg_at_k(ranked, rset.qrels[qid])
        recall.append(recall_at_k(ranked, rset.qrels[qid]))
        mrr.append(mrr_at_k(ranked, rset.qrels[qid]))
    n = max(len(ndcg), 1)
    label = (fusion or DEFAULT_FUSION).label() if mode == "hybrid" else "-"
    return Score(rset.name, mode, label, len(ndcg), sum(ndcg.values()) / n, sum(recall) / n,
                 sum(mrr) / n, time.perf_counter() - started, ndcg, representation)


def _check_modes(modes: Sequence[str]) -> None:
    unknown = set(modes) - set(MODES)
    if unknown:
        raise ValueError(f"unknown mode(s) {sorted(unknown)} (expected {', '.join(MODES)})")


def _score_all(store, queries, rset: RetrievalSet, modes, fusions, say, corpus_ids=None,
               representation: str = "points") -> list[Score]:
    scores = []
    for mode in modes:
        scores.append(score_run(store, queries, rset, mode, None, corpus_ids, representation))
        say(f"{rset.name}: {mode} done")
    for fusion in fusions:
        scores.append(score_run(store, queries, rset, "hybrid", fusion, corpus_ids, representation))
        say(f"{rset.name}: hybrid {fusion.label()} done")
    return scores


def evaluate(rset: RetrievalSet, embedder, modes: Sequence[str] = MODES,
             fusions: Sequence[FusionConfig] = (), cache_dir: Path | None = None,
             progress: Callable[[str], None] | None = None) -> list[Score]:
    """Points representation: every mode on a throwaway embedded collection; `fusions` adds
    hybrid runs per variant."""
    from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore

    say = progress or (lambda message: None)
    _check_modes(modes)
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
            return _score_all(store, queries, rset, modes, fusions, say)
        finally:
            store.close()


@dataclass(frozen=True)
class Ingested:
    documents: int
    chunks: int
    failed: dict[str, str]  # corpus id -> reason


def ingest_corpus(rset: RetrievalSet, embedder, db, defaults, workdir: Path, store,
                  say: Callable[[str], None], max_bytes: int = 50 * 1024 * 1024) -> Ingested:
    """Every corpus document as a Markdown file in KB `eval` of a local object store under
    `workdir`, ingested (force: the catalog outlives the store) by the real pipeline into `store`.
    The KB's chunk sizes are reset to `defaults` first: the KB row outlives runs too."""
    from quivr_pipelines.core.catalog import repository
    from quivr_pipelines.core.objects import LocalFolderStore
    from quivr_pipelines.core.pipeline import IngestionContext, ingest_in_batches

    objects = LocalFolderStore(Path(workdir) / "inbox")
    keys = []
    for doc_id in rset.documents:
        key = corpus_file_name(doc_id)
        objects.put(KB, key, rset.markdown(doc_id).encode("utf-8"))
        keys.append(key)
    repository.ensure_kb(db, KB, defaults)
    repository.configure_kb(db, KB, **{name: getattr(defaults, name) for name in repository.CHUNK_SIZE_FIELDS},
                            pii=defaults.pii)
    ctx = IngestionContext(store=objects, vectors=store, embedder=embedder, db=db, defaults=defaults,
                           max_bytes=max_bytes)
    chunks, documents, failed = 0, 0, {}
    for outcomes in ingest_in_batches(ctx, KB, keys, batch_size=64, force=True):
        for outcome in outcomes:
            if outcome.status == "ingested":
                documents += 1
                chunks += outcome.chunks
            else:
                failed[corpus_id(outcome.object_key)] = f"{outcome.status}: {outcome.reason}"
        say(f"{rset.name}: ingested {documents + len(failed)}/{len(keys)} documents ({chunks} chunks)")
    return Ingested(documents, chunks, failed)


def evaluate_pipeline(rset: RetrievalSet, embedder, db, defaults, modes: Sequence[str] = MODES,
                      fusions: Sequence[FusionConfig] = (), progress: Callable[[str], None] | None = None,
                      max_bytes: int = 50 * 1024 * 1024) -> tuple[list[Score], Ingested]:
    """Pipeline representation (see the module docstring); `db` is the catalog (its schema keeps
    the embedding cache between runs), `defaults` the KB's chunk sizes and PII mode. A document
    the pipeline fails or skips is reported and simply never retrieved (it still counts as
    relevant)."""
    from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore

    say = progress or (lambda message: None)
    _check_modes(modes)
    say(f"{rset.name}: {len(rset.documents)} documents, {len(rset.queries)} queries (pipeline)")
    with tempfile.TemporaryDirectory(prefix="quivr-eval-pipeline-") as tmp:
        store = EmbeddedStore(Path(tmp) / "qdrant", keep_open=True)
        try:
            started = time.perf_counter()
            ingested = ingest_corpus(rset, embedder, db, defaults, Path(tmp), store, say, max_bytes)
            say(f"{rset.name}: {ingested.documents} documents, {ingested.chunks} chunks in "
                f"{time.perf_counter() - started:.1f}s ({len(ingested.failed)} not ingested)")
            corpus_ids = {corpus_file_name(doc_id): doc_id for doc_id in rset.documents}
            queries = _QueryCache(embedder)
            if any(m != "sparse" for m in modes) or fusions:
                queries.warm(rset.queries.values())
            return _score_all(store, queries, rset, modes, fusions, say, corpus_ids, "pipeline"), ingested
        finally:
            store.close()


# -- comparisons ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Compared:
    dataset: str
    representation: str
    run: str  # mode or "hybrid <fusion>"
    against: str  # what it is compared with
    result: evaluation_stats.Comparison

    def as_dict(self) -> dict:
        return {"dataset": self.dataset, "representation": self.representation, "run": self.run,
                "against": self.against, **self.result.as_dict()}


def _run_name(score: Score) -> str:
    return f"hybrid {score.fusion}" if score.mode == "hybrid" else score.mode


def compare_fusions(scores: Sequence[Score]) -> list[Compared]:
    """Each hybrid run with another fusion against the default fusion's run of its set."""
    default = DEFAULT_FUSION.label()
    found = []
    for score in scores:
        if score.mode != "hybrid" or score.fusion == default:
            continue
        base = next((s for s in scores if s.mode == "hybrid" and s.fusion == default
                     and (s.dataset, s.representation) == (score.dataset, score.representation)), None)
        if base is not None:
            found.append(Compared(score.dataset, score.representation, _run_name(score), f"hybrid {default}",
                                  evaluation_stats.compare(base.per_query, score.per_query)))
    return found


def load_baseline(path: Path) -> dict[tuple[str, str, str, str], dict[str, float]]:
    """A saved `eval --json` result: run key -> per-query nDCG@10 (runs saved without them are
    left out; results older than representations were all `points`)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    runs = {}
    for row in data.get("scores", []):
        per_query = row.get(f"per_query_ndcg@{K}")
        if per_query:
            key = (row["dataset"], row.get("representation", "points"), row["mode"], row["fusion"])
            runs[key] = {str(q): float(v) for q, v in per_query.items()}
    if not runs:
        raise ValueError(f"{path}: no run with per-query scores (save one with `quivr-pipelines eval --json`)")
    return runs


def compare_baseline(scores: Sequence[Score], baseline: Mapping[tuple, Mapping[str, float]]) -> list[Compared]:
    """Each run against the same run (set, representation, mode, fusion) of the baseline."""
    return [Compared(s.dataset, s.representation, _run_name(s), "baseline",
                     evaluation_stats.compare(baseline[s.run_key], s.per_query))
            for s in scores if s.run_key in baseline]


def format_comparisons(compared: Sequence[Compared]) -> str:
    rows = [("dataset", "run", "against", "queries", f"ΔnDCG@{K}", "95% CI", "p (paired randomisation)")]
    rows += [(c.dataset + ("" if c.representation == "points" else f" ({c.representation})"), c.run, c.against,
              str(c.result.queries), f"{c.result.delta:+.4f}",
              f"{c.result.ci_low:+.4f}..{c.result.ci_high:+.4f}", evaluation_stats.format_p(c.result.p_value))
             for c in compared]
    return _table(rows)


def format_table(scores: Sequence[Score]) -> str:
    rows = [("dataset", "representation", "mode", "fusion", "queries", f"nDCG@{K}", f"recall@{K}", f"MRR@{K}")]
    rows += [(s.dataset, s.representation, s.mode, s.fusion, str(s.queries), f"{s.ndcg:.3f}", f"{s.recall:.3f}",
              f"{s.mrr:.3f}") for s in scores]
    return _table(rows)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


FUSION_OPTIONS = {"k": "k", "dense": "dense_weight", "sparse": "sparse_weight", "depth": "depth"}


def parse_fusion(spec: str) -> FusionConfig:
    """`rrf`, `rrf:k=20`, `rrf:dense=1,sparse=0.5`, `dbsf`, any of them with `depth=50`. The CLI's
    `search --fusion` and `eval --fusion` share it; bounds are FusionConfig's."""
    method, _, rest = spec.strip().partition(":")
    values: dict = {}
    for part in (p.strip() for p in rest.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        field_name = FUSION_OPTIONS.get(name.strip().lower())
        if not sep or field_name is None:
            raise ValueError(f"fusion {spec!r}: expected options {', '.join(o + '=' for o in FUSION_OPTIONS)} "
                             f"(e.g. rrf:k=20,depth=100), not {part!r}")
        try:
            values[field_name] = int(value) if field_name in ("k", "depth") else float(value)
        except ValueError:
            raise ValueError(f"fusion {spec!r}: {name.strip()} must be a number, not {value.strip()!r}") from None
    return FusionConfig(method=method.strip().lower() or "rrf", **values)


def default_data_root() -> Path:
    """`../shared/data/retrieval` next to the project (from its root, or from this checkout)."""
    candidates = [Path.cwd().parent / "shared" / "data" / "retrieval",
                  Path(__file__).resolve().parents[2].parent / "shared" / "data" / "retrieval"]
    return next((p for p in candidates if p.is_dir()), candidates[0])


def run(datasets: Sequence[str], embedder, modes: Sequence[str] = MODES, limit: int | None = None,
        fusions: Sequence[FusionConfig] = (), data_root: Path | None = None, cache_dir: Path | None = None,
        progress: Callable[[str], None] | None = None, representation: str = "points",
        catalog=None, defaults=None) -> list[Score]:
    """`data_root`: the shared sets' root (`datasets` picks among them) or a BEIR folder. The
    pipeline representation needs the catalog (`Database`) and the KB defaults (`KbConfig`)."""
    if representation not in REPRESENTATIONS:
        raise ValueError(f"unknown representation {representation!r} (expected {' or '.join(REPRESENTATIONS)})")
    root = Path(data_root) if data_root else default_data_root()
    scores: list[Score] = []
    for rset in load_sets(root, datasets):
        rset = rset.subset(limit)
        if representation == "points":
            scores += evaluate(rset, embedder, modes, fusions, cache_dir, progress)
        else:
            scores += evaluate_pipeline(rset, embedder, catalog, defaults, modes, fusions, progress)[0]
    return scores
