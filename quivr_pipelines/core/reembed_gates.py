"""The gates before a re-embedding's swap: plain functions the blocking asset checks call.

Each gate compares one property of a building generation with what it must be and returns a
`GateResult`: a pass/fail, one or two sentences for the Dagster UI and JSON-able figures (at most
`MAX_EXAMPLES` examples in any list). A gate never raises for a bad generation; it fails.

The golden query set of the quality gate is a KB's own file (`GOLDEN_SET_KEY` under the KB's
prefix, never ingested since both object stores skip dot-segments) or generated from the KB's
chunks: one sentence of a chunk as the query, that chunk's document as the answer. A query is
then a verbatim sentence, which BM25 finds by itself; a broken dense side shows in hybrid
search mostly as a lower nDCG@10 (the answer drops a few ranks), so both metrics are gated.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

from quivr_pipelines.core import sparse
from quivr_pipelines.core.errors import ErrorType, IngestionError
from quivr_pipelines.core.evaluation import ndcg_at_k, recall_at_k
from quivr_pipelines.core.generations import Generation
from quivr_pipelines.core.vectorstore.base import DATETIME_FIELDS, INTEGER_FIELDS, KEYWORD_FIELDS, SearchFilter

MAX_EXAMPLES = 50
FINGERPRINT_SAMPLE = 20
GOLDEN_SET_KEY = ".quivr/golden.jsonl"
GOLDEN_MAX_PER_DOCUMENT = 3  # a small KB gets a few queries per document, never one document's set
SENTENCE_WORDS = (8, 40)
WORST_QUERIES = 10
TOLERANCE = 1e-9  # a drop of exactly `margin` passes, whatever the float rounding
EXPECTED_INDEXES = {**{f: "keyword" for f in KEYWORD_FIELDS}, **{f: "integer" for f in INTEGER_FIELDS},
                    **{f: "datetime" for f in DATETIME_FIELDS}}


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    """A markdown table (the Dagster UI renders it); cells escaped so a key cannot break it."""
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _names(keys: list[str], shown: int = 3) -> str:
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


# -- documents ----------------------------------------------------------------------------------
def check_documents(store, kb: str, building: Generation, expected: dict[str, int]) -> GateResult:
    """Every ingested document of the catalog has exactly its chunks in the new collection, and
    the collection holds no other document (`expected`: `generations.expected_chunk_counts`;
    -1 where a re-chunking recorded nothing for the document)."""
    found = {str(k): v for k, v in store.chunk_counts(building.collection, kb).items()}
    unrecorded = sorted(k for k, n in expected.items() if n < 0)
    missing = sorted(k for k, n in expected.items() if n > 0 and k not in found)
    wrong = sorted((k, n, found[k]) for k, n in expected.items() if n >= 0 and k in found and found[k] != n)
    extra = sorted(k for k in found if k not in expected)
    problems = [(k, "not rebuilt (no record)", "-", found.get(k, 0)) for k in unrecorded]
    problems += [(k, "missing", n, 0) for k, n in expected.items() if k in missing]
    problems += [(k, "wrong count", n, f) for k, n, f in wrong]
    problems += [(k, "not in the catalog", 0, found[k]) for k in extra]
    metadata = {
        "collection": building.collection, "documents_expected": len(expected), "documents_found": len(found),
        "points_expected": sum(n for n in expected.values() if n > 0), "points_found": sum(found.values()),
        "missing_count": len(missing), "missing": missing[:MAX_EXAMPLES],
        "wrong_count_count": len(wrong),
        "wrong_counts": [{"document_key": k, "expected": n, "found": f} for k, n, f in wrong[:MAX_EXAMPLES]],
        "extra_count": len(extra), "extra": extra[:MAX_EXAMPLES],
        "unrecorded_count": len(unrecorded), "unrecorded": unrecorded[:MAX_EXAMPLES],
    }
    if not problems:
        return GateResult("documents_complete", True,
                          f"All {len(expected)} ingested documents of {kb} have their chunks in "
                          f"{building.collection} ({metadata['points_found']} points), and no other.", metadata)
    metadata["table"] = _table(("document", "problem", "expected", "found"), sorted(problems)[:MAX_EXAMPLES])
    parts = [f"{len(missing)} missing ({_names(missing)})" if missing else "",
             f"{len(wrong)} with a wrong chunk count ({_names([w[0] for w in wrong])})" if wrong else "",
             f"{len(extra)} not in the catalog ({_names(extra)})" if extra else "",
             f"{len(unrecorded)} the re-chunking has no record of ({_names(unrecorded)})" if unrecorded else ""]
    return GateResult("documents_complete", False,
                      f"{building.collection} does not hold the catalog's {len(expected)} documents: "
                      + "; ".join(p for p in parts if p) + ".", metadata)


# -- collection properties ------------------------------------------------------------------------
def _absent(name: str, collection: str) -> GateResult:
    return GateResult(name, False, f"Collection {collection} does not exist.", {"collection": collection})


def check_dimensions(store, building: Generation, target_dimensions: int) -> GateResult:
    """The dense vector size of the collection, not the catalog's word for it."""
    info = store.collection_info(building.collection, exact=False)
    if info is None:
        return _absent("dimensions", building.collection)
    metadata = {"collection": info.name, "dimensions": info.dimensions, "target_dimensions": target_dimensions}
    if info.dimensions == target_dimensions:
        return GateResult("dimensions", True, f"{info.name} holds {info.dimensions}-dimensional vectors, "
                          "as the target embedder makes.", metadata)
    return GateResult("dimensions", False, f"{info.name} holds {info.dimensions}-dimensional vectors, but the "
                      f"target embedder makes {target_dimensions}: queries would not fit it.", metadata)


def check_fingerprint(store, building: Generation, target_fingerprint: str) -> GateResult:
    """The collection's recorded model and the model its points say embedded them: a collection
    created for the right model but written by another process with another one fails too."""
    info = store.collection_info(building.collection, exact=False)
    if info is None:
        return _absent("fingerprint", building.collection)
    sample = store.sample_points(info.name, FINGERPRINT_SAMPLE, kb=building.kb)
    wrong = [{"point": h.id, "document_key": h.payload.get("document_key"),
              "embedding_model": h.payload.get("embedding_model")}
             for h in sample if h.payload.get("embedding_model") != target_fingerprint]
    metadata = {"collection": info.name, "fingerprint": info.fingerprint, "target_fingerprint": target_fingerprint,
                "points_sampled": len(sample), "points_wrong": len(wrong), "wrong_points": wrong[:MAX_EXAMPLES]}
    if info.fingerprint != target_fingerprint:
        return GateResult("fingerprint", False, f"{info.name} was created for {info.fingerprint}, not the "
                          f"target {target_fingerprint}.", metadata)
    if wrong:
        models = sorted({str(w["embedding_model"]) for w in wrong})
        metadata["table"] = _table(("point", "document", "embedding_model"),
                                   [tuple(w.values()) for w in wrong[:MAX_EXAMPLES]])
        return GateResult("fingerprint", False, f"{len(wrong)} of {len(sample)} sampled points of {info.name} "
                          f"say they were embedded with {_names(models)}, not {target_fingerprint}.", metadata)
    return GateResult("fingerprint", True, f"{info.name} and {len(sample)} sampled points name "
                      f"{target_fingerprint}.", metadata)


def check_payload_indexes(store, collection: str) -> GateResult:
    """The filtered searches (kb, document prefix, content type, dates) stay fast only with
    their indexes; a collection made by hand or by an old version may lack some."""
    found = store.payload_indexes(collection)
    rows = [(f, t, found.get(f, "none")) for f, t in EXPECTED_INDEXES.items() if found.get(f) != t]
    metadata = {"collection": collection, "indexes": dict(sorted(found.items())),
                "expected": EXPECTED_INDEXES, "missing": [f for f, _, got in rows if got == "none"],
                "wrong_type": [{"field": f, "expected": t, "found": got} for f, t, got in rows if got != "none"]}
    if not rows:
        return GateResult("payload_indexes", True, f"{collection} has all {len(EXPECTED_INDEXES)} payload "
                          "indexes of the right type.", metadata)
    metadata["table"] = _table(("field", "expected", "found"), rows)
    return GateResult("payload_indexes", False, f"{collection} lacks {len(rows)} of its "
                      f"{len(EXPECTED_INDEXES)} payload indexes ({_names([r[0] for r in rows], 6)}): "
                      "filtered searches would scan every point.", metadata)


# -- golden query set -----------------------------------------------------------------------------
@dataclass(frozen=True)
class GoldenQuery:
    query: str
    document_key: str
    relevant: tuple[str, ...] = ()  # further documents that answer it too
    chunk_index: int | None = None  # the chunk a generated query was taken from

    def answers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.document_key, *self.relevant)))

    def as_dict(self) -> dict:
        """What the generation keeps (`golden_set`) and `from_dict` reads back."""
        row: dict[str, Any] = {"query": self.query, "document_key": self.document_key}
        if self.relevant:
            row["relevant"] = list(self.relevant)
        if self.chunk_index is not None:
            row["chunk_index"] = self.chunk_index
        return row

    @classmethod
    def from_dict(cls, row: Any) -> GoldenQuery:
        """One JSON object: "query" and "document_key", or "relevant" (a list of keys), or both."""
        if not isinstance(row, dict):
            raise ValueError("expected a JSON object")
        query, key, relevant = row.get("query"), row.get("document_key"), row.get("relevant", [])
        if not isinstance(query, str) or not query.strip():
            raise ValueError('"query" must be a non-empty string')
        if not isinstance(relevant, list) or not all(isinstance(k, str) and k for k in relevant):
            raise ValueError('"relevant" must be a list of document keys')
        if key is not None and (not isinstance(key, str) or not key):
            raise ValueError('"document_key" must be a non-empty string')
        keys = list(dict.fromkeys(([key] if key else []) + relevant))
        if not keys:
            raise ValueError('needs "document_key" or "relevant"')
        index = row.get("chunk_index")
        return cls(query.strip(), keys[0], tuple(keys[1:]), index if isinstance(index, int) else None)


_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_BOILERPLATE = re.compile(r"copyright|all rights reserved|https?://|www\.|@|\bpage \d+|\|", re.IGNORECASE)


def usable_sentence(sentence: str) -> bool:
    """A query a person could have asked: a whole sentence (ends with . ! ?; a heading does
    not), 8 to 40 words, mostly letters, not shouting, no link, address, table row or legal line."""
    words = sentence.split()
    if not SENTENCE_WORDS[0] <= len(words) <= SENTENCE_WORDS[1] or sentence[-1] not in ".!?":
        return False
    letters = sum(ch.isalpha() for ch in sentence)
    upper = sum(ch.isupper() for ch in sentence)
    return (letters >= 0.6 * len(sentence.replace(" ", "")) and upper <= 0.3 * letters
            and not _BOILERPLATE.search(sentence))


def _sentences(text: str) -> list[str]:
    return [s for s in (re.sub(r"\s+", " ", part).strip() for part in _SENTENCE_SPLIT.split(text or ""))
            if s and usable_sentence(s)]


WORD_RUN = 12


def _word_runs(text: str, rng: random.Random) -> list[str]:
    """One run of WORD_RUN words from a chunk with no usable sentence, at a seeded place."""
    words = [w for w in (text or "").split() if any(ch.isalpha() for ch in w)]
    if len(words) < WORD_RUN * 2:
        return []
    start = rng.randrange(0, len(words) - WORD_RUN)
    run = " ".join(words[start:start + WORD_RUN])
    return [] if _BOILERPLATE.search(run) else [run]


def _candidates(points: list, rng: random.Random, used: set[str]) -> list[tuple[int, str]]:
    """(chunk index, sentence) for up to GOLDEN_MAX_PER_DOCUMENT chunks of one document, in a
    seeded order; a sentence already taken (a paragraph repeated across documents) is skipped,
    since its answer would be ambiguous."""
    order = list(points)
    rng.shuffle(order)
    picked: list[tuple[int, str]] = []
    for point in order:
        options = [s for s in _sentences(point.payload.get("text", "")) if s.casefold() not in used]
        if not options:  # text without sentence punctuation (lower-cased corpora, lists): a run of words
            options = [s for s in _word_runs(point.payload.get("text", ""), rng) if s.casefold() not in used]
        if options:
            sentence = rng.choice(options)
            used.add(sentence.casefold())
            picked.append((int(point.payload.get("chunk_index", 0)), sentence))
            if len(picked) == GOLDEN_MAX_PER_DOCUMENT:
                break
    return picked


def golden_set_from_chunks(store, kb: str, collection: str, size: int = 50, seed: int = 0) -> list[GoldenQuery]:
    """Up to `size` queries over as many distinct documents as the KB has (then a second and a
    third chunk of each, for a small KB); the same set for the same seed and collection. Only
    the documents needed are read."""
    keys = sorted(k for k in store.chunk_counts(collection, kb) if k)
    rng = random.Random(seed)
    rng.shuffle(keys)
    used: set[str] = set()
    rounds: list[list[GoldenQuery]] = [[] for _ in range(GOLDEN_MAX_PER_DOCUMENT)]
    for key in keys:
        if len(rounds[0]) >= size:
            break
        for n, (index, sentence) in enumerate(_candidates(store.document_points(collection, kb, key), rng, used)):
            rounds[n].append(GoldenQuery(sentence, key, chunk_index=index))
    return [q for queries in rounds for q in queries][:size]


def load_golden_set(object_store, kb: str, key: str = GOLDEN_SET_KEY,
                    max_bytes: int = 5_000_000) -> list[GoldenQuery] | None:
    """The KB's own golden set (JSON lines), or None when it has none."""
    if object_store.head(kb, key) is None:
        return None
    try:
        data = object_store.read(kb, key, max_bytes=max_bytes).data
    except IngestionError as exc:
        if exc.error_type == ErrorType.NOT_FOUND:
            return None
        raise ValueError(f"{object_store.uri(kb, key)}: {exc}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{object_store.uri(kb, key)}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    queries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            queries.append(GoldenQuery.from_dict(json.loads(line)))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise ValueError(f"{object_store.uri(kb, key)} line {number}: {exc}") from None
    return queries


# -- retrieval quality ----------------------------------------------------------------------------
SEARCH_DEPTHS = (1, 3, 10)  # x k: hits are deduplicated to documents, so search deeper until k are found


def _ranked(store, collection: str, kb: str, dense, sparse_query, mode: str, k: int) -> list[str]:
    """The first k distinct documents of a query's hits, in the order of their first chunk."""
    ranked: list[str] = []
    for factor in SEARCH_DEPTHS:
        depth = k * factor
        hits = store.search(collection, dense, sparse_query, depth, SearchFilter(kb=kb), mode)
        ranked = list(dict.fromkeys(h.payload.get("document_key") for h in hits if h.payload.get("document_key")))
        if len(ranked) >= k or len(hits) < depth:
            break
    return ranked[:k]


def score_golden_set(store, embedder, kb: str, collection: str, queries: list[GoldenQuery],
                     mode: str = "hybrid", k: int = 10) -> dict:
    """recall@k and nDCG@k (binary grades) of `collection` itself, not the alias: the gate
    compares a collection that serves nothing yet with the serving one."""
    vectors = embedder.embed([q.query for q in queries]).vectors if queries and mode != "sparse" else None
    per_query = []
    for i, q in enumerate(queries):
        dense = vectors[i].tolist() if vectors is not None else None
        ranked = _ranked(store, collection, kb, dense, sparse.query_vector(q.query), mode, k)
        grades = dict.fromkeys(q.answers(), 1)
        rank = next((r for r, doc in enumerate(ranked, start=1) if doc in grades), None)
        per_query.append({"query": q.query, "document_key": q.document_key, "rank": rank,
                          f"recall@{k}": recall_at_k(ranked, grades, k), f"ndcg@{k}": ndcg_at_k(ranked, grades, k)})
    def mean(name):
        return sum(p[name] for p in per_query) / len(per_query) if per_query else 0.0
    return {f"recall@{k}": mean(f"recall@{k}"), f"ndcg@{k}": mean(f"ndcg@{k}"), "queries": len(per_query),
            "mode": mode, "collection": collection, "per_query": per_query}


def _fingerprint_problem(store, gen: Generation, embedder) -> str | None:
    info = store.collection_info(gen.collection, exact=False)
    if info is None:
        return f"collection {gen.collection} does not exist"
    if info.fingerprint != embedder.fingerprint:
        return f"{gen.collection} was embedded with {info.fingerprint}, not the given {embedder.fingerprint}"
    return None


def _losses(serving: dict, building: dict) -> list[dict]:
    """The queries that lost the most (nDCG first, then recall), serving and building side by side."""
    rows = [{"query": s["query"], "document_key": s["document_key"], "serving_rank": s["rank"],
             "building_rank": b["rank"], "ndcg_delta": b["ndcg@10"] - s["ndcg@10"],
             "recall_delta": b["recall@10"] - s["recall@10"]}
            for s, b in zip(serving["per_query"], building["per_query"], strict=True)]
    rows.sort(key=lambda r: (r["ndcg_delta"], r["recall_delta"]))
    return [r for r in rows if r["ndcg_delta"] < 0 or r["recall_delta"] < 0][:WORST_QUERIES]


def check_retrieval_quality(store, kb: str, serving: Generation, building: Generation, serving_embedder,
                            building_embedder, queries: list[GoldenQuery], margin: float = 0.02,
                            min_queries: int = 5, mode: str = "hybrid") -> GateResult:
    """The new generation retrieves the golden set about as well as the serving one: recall@10
    and nDCG@10 each at most `margin` (absolute) below. Each side is searched with its own
    embedder, as the query service will once the alias moves."""
    base = {"serving_collection": serving.collection, "building_collection": building.collection,
            "margin": margin, "queries": len(queries), "min_queries": min_queries, "mode": mode}
    if len(queries) < min_queries:
        return GateResult("retrieval_quality", False, f"Only {len(queries)} golden queries for {kb} (at least "
                          f"{min_queries} are needed to compare generations): add {GOLDEN_SET_KEY} or more "
                          "documents.", base)
    for gen, embedder in ((serving, serving_embedder), (building, building_embedder)):
        problem = _fingerprint_problem(store, gen, embedder)
        if problem:
            return GateResult("retrieval_quality", False, f"Cannot compare: {problem}.", base)
    old = score_golden_set(store, serving_embedder, kb, serving.collection, queries, mode)
    new = score_golden_set(store, building_embedder, kb, building.collection, queries, mode)
    deltas = {m: new[m] - old[m] for m in ("recall@10", "ndcg@10")}
    worst = _losses(old, new)
    metadata = {**base, "serving": {m: old[m] for m in deltas}, "building": {m: new[m] for m in deltas},
                "delta": deltas, "worst_queries": worst,
                "table": _table(("metric", "serving", "building", "delta", "allowed"),
                                [(m, f"{old[m]:.3f}", f"{new[m]:.3f}", f"{deltas[m]:+.3f}", f"{-margin:+.3f}")
                                 for m in deltas])}
    figures = ", ".join(f"{m} {new[m]:.3f} vs {old[m]:.3f}" for m in deltas)
    failed = [m for m, d in deltas.items() if d < -margin - TOLERANCE]
    if not failed:
        return GateResult("retrieval_quality", True, f"{building.collection} retrieves {len(queries)} golden "
                          f"queries as well as {serving.collection} within {margin:g}: {figures}.", metadata)
    return GateResult("retrieval_quality", False, f"{building.collection} retrieves worse than the serving "
                      f"{serving.collection} on {len(queries)} golden queries: "
                      + ", ".join(f"{m} {new[m]:.3f} vs {old[m]:.3f} ({deltas[m]:+.3f})" for m in failed)
                      + f", more than the allowed {margin:g}.", metadata)
