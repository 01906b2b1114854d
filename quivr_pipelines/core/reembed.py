"""Re-embed or re-chunk a KB into a new collection generation while the alias keeps serving the
current one; then catch it up, swap the alias atomically, roll back, clean up. No Dagster here:
the `reembedding` assets, the CLI and the benchmark call these functions.

- **copy** (only the model changes): the serving collection is scrolled in point-id order (the
  scroll offset is the durable cursor, so a killed build resumes where it stopped, and point ids
  are kept, so nothing is duplicated); each point's indexed text (contextual header + text, as
  ingestion embedded it) is embedded by the target model (the embedding cache first, every
  model call in the usage ledger with the run's id) and written with the same payload.
- **rechunk** (chunk sizes change): each ingested document is read again from the object store
  and goes through the ingestion pipeline with the new sizes, written to the new generation;
  its chunk counts are kept per document (`generation_documents`) until the swap. Resumable per
  document.
- **catch-up**: documents whose catalog row changed since the build started (added, changed,
  failed, deleted while it ran) are mirrored into the new generation: a copy re-reads their
  points from the serving collection, a re-chunking re-reads their objects. The last pass runs
  under the KB's exclusive write lock, together with the swap, so no ingestion batch or prune
  writes between it and the alias update (ingestion and prune hold the lock shared).
- **swap**: one alias update (atomic on both stores), then the catalog; the previous generation
  stays retired for the rollback window.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from quivr_pipelines.core import audit, generations, sparse
from quivr_pipelines.core.catalog import repository
from quivr_pipelines.core.catalog.database import Database
from quivr_pipelines.core.catalog.repository import CHUNK_SIZE_FIELDS, KbConfig
from quivr_pipelines.core.chunking import context_header
from quivr_pipelines.core.embedding.base import Embedder
from quivr_pipelines.core.embedding.batching import embed_documents, text_digest
from quivr_pipelines.core.errors import DocumentStatus
from quivr_pipelines.core.generations import Generation
from quivr_pipelines.core.vectorstore.base import PointRecord

log = logging.getLogger(__name__)

PAGE = 256  # points per scroll page and embedding round of a copy
DONE = "*"  # the cursor of a copy whose scroll reached the end (point ids are UUIDs)
CATCH_UP_LOCKED_LIMIT = 200  # documents left for the locked pass; more: another unlocked pass first
LOCK_TIMEOUT_SECONDS = 300.0


class ReembedError(RuntimeError):
    """A re-embedding cannot start or go on; the message says why in one line."""


@dataclass(frozen=True)
class Target:
    """What the new generation is: an embedder spec (None: the serving model) and chunk sizes
    (missing: the serving generation's); `context_headers` None: as the serving generation."""

    embedder: str | None = None
    chunking: dict[str, int] = field(default_factory=dict)
    context_headers: bool | None = None


@dataclass
class ReembedContext:
    vectors: object  # VectorStore
    db: Database
    registry: object  # EmbedderRegistry
    defaults: KbConfig
    objects: object | None = None  # ObjectStore: a re-chunking reads the documents again
    max_bytes: int = 25 * 1024 * 1024
    batch_size: int = 64
    run_id: str | None = None
    parser: object | None = None  # ParserPool, lent by the owner
    context_headers: bool = True  # QUIVR_CHUNK_CONTEXT_HEADERS, for generations that do not say
    actor: str = "cli"
    say: Callable[[str], None] = log.info
    page_size: int | None = None  # points per scroll page of a copy (QUIVR_REEMBED_PAGE_SIZE); None: PAGE


@dataclass(frozen=True)
class Progress:
    generation: int
    done: int
    total: int
    cached: int
    embedded: int
    seconds: float
    unit: str = "chunks"

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        return (self.total - self.done) / self.rate if self.rate > 0 and self.total >= self.done else None

    def line(self) -> str:
        eta = self.eta_seconds
        return (f"generation {self.generation}: {self.done}/{self.total} {self.unit}"
                f" ({self.cached} from the cache, {self.embedded} embedded), {self.rate:.1f} {self.unit}/s"
                + (f", ETA {eta:.0f} s" if eta is not None else ""))


# -- the serving generation and the target ----------------------------------------------------------

def settle(ctx: ReembedContext, kb: str) -> Generation:
    """The KB's serving generation, with the catalog made to agree with the alias: a KB from
    before generations is registered; a swap or rollback killed between the alias update and the
    catalog's is finished (the alias is what queries see)."""
    collection = ctx.vectors.resolve_alias(kb)
    if collection is None:
        raise ReembedError(f"knowledge base {kb!r} has no collection yet: ingest it first")
    current = generations.serving(ctx.db, kb)
    if current is not None and current.collection == collection:
        return current
    known = next((g for g in generations.history(ctx.db, kb) if g.collection == collection), None)
    if known is None:
        info = ctx.vectors.collection_info(collection, exact=False)
        generations.register_serving(ctx.db, kb, collection, info.fingerprint, info.dimensions,
                                     _chunking_of(repository.get_kb(ctx.db, kb), ctx.context_headers))
        return generations.serving(ctx.db, kb)
    if current is not None:  # the alias moved on, the catalog did not
        (generations.rollback_catalog if known.state == generations.RETIRED else generations.swap_catalog)(
            ctx.db, kb, known, current)
    else:
        generations.set_state(ctx.db, kb, known.generation, generations.SERVING)
    return generations.serving(ctx.db, kb)


def _chunking_of(config: KbConfig, context_headers: bool) -> dict:
    return {**{name: getattr(config, name) for name in CHUNK_SIZE_FIELDS}, "context_headers": context_headers}


def _target_chunking(serving: Generation, config: KbConfig, target: Target, default_headers: bool) -> dict:
    base = {**_chunking_of(config, default_headers), **(serving.chunking or {})}
    unknown = set(target.chunking) - set(CHUNK_SIZE_FIELDS)
    if unknown:
        raise ReembedError(f"unknown chunk settings: {', '.join(sorted(unknown))}")
    chunking = {**base, **{k: v for k, v in target.chunking.items() if v is not None}}
    if target.context_headers is not None:
        chunking["context_headers"] = target.context_headers
    if chunking["chunk_new_after_characters"] > chunking["chunk_max_characters"]:
        chunking["chunk_new_after_characters"] = chunking["chunk_max_characters"]
    return chunking


def _embedder_for(ctx: ReembedContext, spec: str | None, serving: Generation) -> tuple[Embedder, str]:
    from quivr_pipelines.core.embedding.registry import parse_spec

    if spec is None:
        embedder = ctx.registry.for_fingerprint(serving.fingerprint)
        if embedder is None:
            raise ReembedError(f"no configured embedder produces {serving.fingerprint}; pass --embedder")
        return embedder, serving.embedder_spec or _spec_of(embedder)
    try:
        parsed = parse_spec(spec)
    except ValueError as exc:
        raise ReembedError(str(exc)) from None
    return ctx.registry.for_spec(parsed), parsed.label()


def _spec_of(embedder: Embedder) -> str:
    if embedder.provider == "local":
        return "local"
    return f"{embedder.provider}:{embedder.model}:{embedder.dimensions}"


def _mode(serving: Generation, chunking: dict, fingerprint: str) -> str:
    keys = (*CHUNK_SIZE_FIELDS, "context_headers")
    base = serving.chunking or {}
    if any(k in base and base[k] != chunking[k] for k in keys if k != "context_headers"):
        return "rechunk"
    if base.get("context_headers", chunking["context_headers"]) != chunking["context_headers"]:
        return "copy"  # the same chunks, embedded with or without their headers
    if fingerprint == serving.fingerprint:
        raise ReembedError(f"the target is what generation {serving.generation} already serves "
                           f"({fingerprint}, same chunk sizes): nothing to re-embed")
    return "copy"


def indexed_text(payload: dict, headers: bool) -> str:
    """What ingestion embedded for a chunk (core/chunking.py: header, then text)."""
    text = payload.get("text") or ""
    if not headers:
        return text
    header = context_header(payload.get("document_title"), payload.get("section_title"), text)
    return f"{header}\n\n{text}" if header else text


# -- dry run ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    kb: str
    mode: str
    serving: Generation
    target_fingerprint: str
    target_spec: str
    chunking: dict
    documents: int
    chunks: int
    cached: int
    to_embed: int
    tokens: int
    dollars: float | None
    estimated: bool  # a re-chunking's chunk figures are estimated from the serving chunks' sizes

    def as_dict(self) -> dict:
        return {"kb": self.kb, "mode": self.mode, "serving_generation": self.serving.generation,
                "serving_model": self.serving.fingerprint, "target_model": self.target_fingerprint,
                "target_spec": self.target_spec, "chunking": self.chunking, "documents": self.documents,
                "chunks": self.chunks, "cache_hits": self.cached, "chunks_to_embed": self.to_embed,
                "tokens_to_embed": self.tokens, "dollars": self.dollars, "estimated": self.estimated}


def plan(ctx: ReembedContext, kb: str, target: Target, price_per_million: float | None = None) -> Plan:
    """What a re-embedding would do, before any work: chunks, cache hits, tokens (counted with the
    target model's own tokenizer), dollars with a price. Reads the serving collection's texts."""
    serving = settle(ctx, kb)
    embedder, spec = _embedder_for(ctx, target.embedder, serving)
    chunking = _target_chunking(serving, repository.get_kb(ctx.db, kb), target, ctx.context_headers)
    mode = _mode(serving, chunking, embedder.fingerprint)
    texts = _serving_texts(ctx, serving, chunking["context_headers"])
    documents = len({key for key, _ in texts})
    estimated = mode == "rechunk"
    if estimated:  # the new chunks are unknown until parsed: the same characters, cut anew
        characters = sum(len(t) for _, t in texts)
        chunks = max(documents, round(characters / max(1, chunking["chunk_new_after_characters"])))
        tokens = round(sum(embedder.count_tokens([t for _, t in texts])) if texts else 0)
        cached = 0
    else:
        unique = {text_digest(t): t for _, t in texts}
        known = repository.cached_embeddings(ctx.db, embedder.fingerprint, list(unique))
        chunks, cached = len(texts), sum(1 for _, t in texts if text_digest(t) in known)
        missing = [t for d, t in unique.items() if d not in known]
        tokens = sum(embedder.count_tokens(missing)) if missing else 0
    dollars = round(tokens / 1e6 * price_per_million, 8) if price_per_million is not None else None
    return Plan(kb, mode, serving, embedder.fingerprint, spec, chunking, documents, chunks, cached,
                chunks - cached, tokens, dollars, estimated)


def _serving_texts(ctx: ReembedContext, serving: Generation, headers: bool) -> list[tuple[str, str]]:
    texts, offset = [], None
    while True:
        hits, offset = ctx.vectors.scroll_points(serving.collection, serving.kb, offset, 1000)
        texts += [(h.payload.get("document_key"), indexed_text(h.payload, headers)) for h in hits]
        if offset is None:
            return texts


# -- build --------------------------------------------------------------------------------------------

def start_or_resume(ctx: ReembedContext, kb: str, target: Target) -> Generation:
    """The KB's building generation for `target`: the one in progress when it has the same
    target (a resumed run), else a new one. A building generation of another target is refused
    (one at a time; `reembed cancel` drops it)."""
    serving = settle(ctx, kb)
    embedder, spec = _embedder_for(ctx, target.embedder, serving)
    chunking = _target_chunking(serving, repository.get_kb(ctx.db, kb), target, ctx.context_headers)
    current = generations.building(ctx.db, kb)
    if current is not None:
        if current.fingerprint == embedder.fingerprint and current.chunking == chunking:
            generations.update(ctx.db, kb, current.generation, dagster_run_id=ctx.run_id or current.dagster_run_id)
            ctx.say(f"resuming generation {current.generation} ({current.collection}) at {current.chunks_done} "
                    f"of {current.chunks_total} chunks")
            return generations.get(ctx.db, kb, current.generation)
        raise ReembedError(f"{kb} already builds generation {current.generation} for {current.fingerprint} "
                           f"{current.chunking}; finish it or `quivr-pipelines reembed cancel {kb}`")
    mode = _mode(serving, chunking, embedder.fingerprint)
    total = ctx.vectors.count(serving.collection, kb=kb)
    gen = generations.start_building(ctx.db, kb, fingerprint=embedder.fingerprint, dimensions=embedder.dimensions,
                                     embedder_spec=spec, chunking=chunking, mode=mode,
                                     source_generation=serving.generation, run_id=ctx.run_id, chunks_total=total)
    ctx.vectors.ensure_collection(gen.collection, embedder.dimensions, embedder.fingerprint)
    generations.update(ctx.db, kb, gen.generation, caught_up_at=_quiet_mark(ctx, kb))
    ctx.say(f"building generation {gen.generation} ({gen.collection}, {mode}) from generation "
            f"{serving.generation} ({serving.collection})")
    return generations.get(ctx.db, kb, gen.generation)


def _quiet_mark(ctx: ReembedContext, kb: str):
    """A catalog time before which every write to the KB is committed: taken under the KB's
    write lock (exclusively, for an instant), so no batch that started earlier commits later."""
    with generations.kb_write_lock(ctx.db, kb, exclusive=True, timeout_seconds=LOCK_TIMEOUT_SECONDS):
        return generations.database_now(ctx.db)


def build(ctx: ReembedContext, gen: Generation,
          progress: Callable[[Progress], None] | None = None) -> Generation:
    """Fill the building generation (or go on filling it), then catch it up once."""
    serving = generations.get(ctx.db, gen.kb, gen.source_generation)
    if serving is None or serving.state not in (generations.SERVING, generations.RETIRED):
        raise ReembedError(f"generation {gen.generation} was built from {gen.source_generation}, which is gone")
    embedder = _building_embedder(ctx, gen)
    if gen.mode == "rechunk":
        _rechunk(ctx, gen, embedder, progress)
    else:
        _copy(ctx, gen, serving, embedder, progress)
    catch_up(ctx, generations.get(ctx.db, gen.kb, gen.generation))
    return generations.get(ctx.db, gen.kb, gen.generation)


def _building_embedder(ctx: ReembedContext, gen: Generation) -> Embedder:
    embedder = ctx.registry.for_fingerprint(gen.fingerprint)
    if embedder is None and gen.embedder_spec:
        from quivr_pipelines.core.embedding.registry import parse_spec

        embedder = ctx.registry.for_spec(parse_spec(gen.embedder_spec))
    if embedder is None or embedder.fingerprint != gen.fingerprint:
        raise ReembedError(f"no configured embedder produces {gen.fingerprint} (generation {gen.generation})")
    return embedder


def _copy(ctx: ReembedContext, gen: Generation, serving: Generation, embedder: Embedder,
          progress: Callable[[Progress], None] | None) -> None:
    headers = bool(gen.chunking.get("context_headers", ctx.context_headers))
    offset = gen.cursor
    done, cached, embedded, tokens = gen.chunks_done, gen.chunks_cached, gen.chunks_embedded, gen.tokens
    seconds = gen.build_seconds
    while offset != DONE:
        started = time.perf_counter()
        hits, following = ctx.vectors.scroll_points(serving.collection, gen.kb, offset, ctx.page_size or PAGE)
        points, stats = reembedded_points(ctx, gen.kb, hits, embedder, headers)
        ctx.vectors.upsert_points(gen.collection, points)
        done, cached, embedded, tokens = (done + len(points), cached + stats.cached_texts,
                                          embedded + stats.embedded_texts, tokens + stats.tokens)
        seconds += time.perf_counter() - started
        offset = following if following is not None else DONE
        generations.update(ctx.db, gen.kb, gen.generation, cursor=offset, chunks_done=done, chunks_cached=cached,
                           chunks_embedded=embedded, tokens=tokens, build_seconds=seconds)
        if stats.failures:
            ctx.say(f"{len(stats.failures)} documents' chunks could not be embedded: "
                    f"{'; '.join(f'{k}: {v}' for k, v in list(stats.failures.items())[:5])}")
        if progress is not None:
            progress(Progress(gen.generation, done, max(gen.chunks_total, done), cached, embedded, seconds))


@dataclass
class _Stats:
    cached_texts: int = 0
    embedded_texts: int = 0
    tokens: int = 0
    failures: dict[str, str] = field(default_factory=dict)


def reembedded_points(ctx: ReembedContext, kb: str, hits, embedder: Embedder,
                      headers: bool) -> tuple[list[PointRecord], _Stats]:
    """The points of `hits` (payload included) with vectors of `embedder`; the chunks of a
    document whose embedding failed are left out (the completeness gate then names it)."""
    by_document: dict[str, list] = {}
    for hit in hits:
        by_document.setdefault(hit.payload.get("document_key"), []).append(hit)
    texts = {key: [indexed_text(h.payload, headers) for h in group] for key, group in by_document.items()}
    outcome = embed_documents(embedder, ctx.db, list(texts.items()), kb=kb, batch_size=ctx.batch_size,
                              run_id=ctx.run_id)
    points = []
    for key, group in by_document.items():
        if key not in outcome.vectors:
            continue
        for hit, text, vector in zip(group, texts[key], outcome.vectors[key]):
            points.append(PointRecord(id=hit.id, dense=vector.tolist(), sparse=sparse.document_vector(text),
                                      payload={**hit.payload, "embedding_model": embedder.fingerprint}))
    stats = _Stats(outcome.cached_texts, outcome.embedded_texts, sum(outcome.tokens.values()), outcome.failures)
    return points, stats


def _rechunk(ctx: ReembedContext, gen: Generation, embedder: Embedder,
             progress: Callable[[Progress], None] | None) -> None:
    rows = repository.get_documents(ctx.db, gen.kb)
    wanted = sorted(k for k, r in rows.items() if r["status"] == DocumentStatus.INGESTED)
    have = generations.generation_documents(ctx.db, gen.kb, gen.generation)
    todo = [k for k in wanted if k not in have]
    _rechunk_documents(ctx, gen, embedder, todo, progress, already=len(wanted) - len(todo), total=len(wanted))


def _rechunk_documents(ctx: ReembedContext, gen: Generation, embedder: Embedder, keys: list[str],
                       progress=None, already: int = 0, total: int | None = None) -> None:
    from quivr_pipelines.core.pipeline import IngestionContext, ingest_in_batches

    if not keys:
        return
    if ctx.objects is None:
        raise ReembedError("re-chunking reads the documents again: it needs the object store")
    config = dataclasses.replace(repository.get_kb(ctx.db, gen.kb),
                                 **{k: gen.chunking[k] for k in CHUNK_SIZE_FIELDS if k in gen.chunking})
    ictx = IngestionContext(store=ctx.objects, vectors=ctx.vectors, embedder=embedder, db=ctx.db,
                            defaults=config, max_bytes=ctx.max_bytes, batch_size=ctx.batch_size,
                            run_id=ctx.run_id, parser=ctx.parser,
                            context_headers=bool(gen.chunking.get("context_headers", ctx.context_headers)),
                            target=gen)
    started, done = time.perf_counter(), already
    current = generations.get(ctx.db, gen.kb, gen.generation)
    chunks, seconds = current.chunks_done, current.build_seconds
    for outcomes in ingest_in_batches(ictx, gen.kb, keys, 32, force=True):
        done += len(outcomes)
        chunks += sum(o.chunks for o in outcomes if o.status == DocumentStatus.INGESTED)
        elapsed = seconds + time.perf_counter() - started
        generations.update(ctx.db, gen.kb, gen.generation, chunks_done=chunks, build_seconds=elapsed)
        if progress is not None and total is not None:
            progress(Progress(gen.generation, done, total, 0, chunks, elapsed, unit="documents"))


# -- catch-up, swap, rollback ------------------------------------------------------------------------

def catch_up(ctx: ReembedContext, gen: Generation, locked: bool = False) -> int:
    """Mirror into `gen` the documents whose catalog row changed since its last catch-up.
    Returns how many. `locked`: the caller holds the KB's exclusive write lock (the final pass)."""
    mark = generations.database_now(ctx.db) if locked else _quiet_mark(ctx, gen.kb)
    changed = generations.changed_since(ctx.db, gen.kb, gen.caught_up_at)
    if changed:
        mirror(ctx, gen, sorted(changed), changed)
    generations.update(ctx.db, gen.kb, gen.generation, caught_up_at=mark)
    return len(changed)


def mirror(ctx: ReembedContext, gen: Generation, keys: list[str], rows: dict[str, dict]) -> None:
    """Make `gen` hold what the KB's serving generation holds for `keys`."""
    serving = generations.serving(ctx.db, gen.kb)
    embedder = _building_embedder(ctx, gen)
    if gen.mode == "rechunk":
        ingested = [k for k in keys if rows[k]["status"] == DocumentStatus.INGESTED]
        gone = [k for k in keys if rows[k]["status"] != DocumentStatus.INGESTED]
        if gone:
            ctx.vectors.delete_documents(gen.collection, gen.kb, gone)
            generations.forget_generation_documents(ctx.db, gen.kb, gen.generation, gone)
        _rechunk_documents(ctx, gen, embedder, ingested)
        return
    headers = bool(gen.chunking.get("context_headers", ctx.context_headers))
    for start in range(0, len(keys), 64):
        items = []
        for key in keys[start:start + 64]:
            hits = ctx.vectors.document_points(serving.collection, gen.kb, key)
            points, _ = reembedded_points(ctx, gen.kb, hits, embedder, headers) if hits else ([], None)
            items.append((gen.kb, key, points))
        ctx.vectors.replace_documents(gen.collection, items)


GATES = ("documents_complete", "dimensions", "fingerprint", "payload_indexes", "retrieval_quality")
THRESHOLDS = "thresholds"  # the gate settings the build was started with, kept beside the results


def gates_passed(gen: Generation) -> tuple[bool, list[str]]:
    """All five gates recorded as passed (a missing one counts as not passed)."""
    results = {k: v for k, v in (gen.gates or {}).items() if k != THRESHOLDS}
    failed = [name for name in GATES if not (results.get(name) or {}).get("passed")]
    return not failed, [name for name in failed if name in results]


def set_thresholds(ctx: ReembedContext, gen: Generation, margin: float, golden_size: int, min_queries: int) -> None:
    gates = {k: v for k, v in (gen.gates or {}).items() if k != THRESHOLDS}
    generations.update(ctx.db, gen.kb, gen.generation, gates={**gates, THRESHOLDS: {
        "margin": margin, "golden_set_size": golden_size, "min_queries": min_queries}})


def golden_set(ctx: ReembedContext, gen: Generation) -> list:
    """The golden queries of `gen`: kept with it once chosen; the KB's own file when it has one,
    else sentences of the serving generation's chunks."""
    from quivr_pipelines.core import reembed_gates

    if gen.golden_set:
        return [reembed_gates.GoldenQuery(**q) for q in gen.golden_set]
    queries = reembed_gates.load_golden_set(ctx.objects, gen.kb) if ctx.objects is not None else None
    source = "file"
    if queries is None:
        serving = generations.get(ctx.db, gen.kb, gen.source_generation)
        size = ((gen.gates or {}).get(THRESHOLDS) or {}).get("golden_set_size", 50)
        queries, source = reembed_gates.golden_set_from_chunks(ctx.vectors, gen.kb, serving.collection, size), "chunks"
    generations.update(ctx.db, gen.kb, gen.generation,
                       golden_set=[dataclasses.asdict(q) | {"source": source} for q in queries])
    return queries


def run_gate(ctx: ReembedContext, gen: Generation, name: str):
    """One gate on `gen`, its result recorded with the generation (the swap reads them)."""
    from quivr_pipelines.core import reembed_gates as g

    gen = generations.get(ctx.db, gen.kb, gen.generation)
    thresholds = (gen.gates or {}).get(THRESHOLDS) or {}
    try:
        if name == "documents_complete":
            result = g.check_documents(ctx.vectors, gen.kb, gen, generations.expected_chunk_counts(ctx.db, gen))
        elif name == "dimensions":
            result = g.check_dimensions(ctx.vectors, gen, _building_embedder(ctx, gen).dimensions)
        elif name == "fingerprint":
            result = g.check_fingerprint(ctx.vectors, gen, _building_embedder(ctx, gen).fingerprint)
        elif name == "payload_indexes":
            result = g.check_payload_indexes(ctx.vectors, gen.collection)
        elif name == "retrieval_quality":
            serving = generations.get(ctx.db, gen.kb, gen.source_generation)
            serving_embedder = ctx.registry.for_fingerprint(serving.fingerprint)
            if serving_embedder is None:
                raise ReembedError(f"no configured embedder produces the serving model {serving.fingerprint}")
            result = _quality(ctx, gen, serving, serving_embedder, thresholds)
        else:
            raise ValueError(f"unknown gate {name!r}")
    except ReembedError as exc:
        result = g.GateResult(name, False, str(exc), {})
    current = generations.get(ctx.db, gen.kb, gen.generation)
    generations.update(ctx.db, gen.kb, gen.generation, gates={
        **(current.gates or {}), name: {"passed": result.passed, "description": result.description}})
    return result


def _quality(ctx: ReembedContext, gen: Generation, serving: Generation, serving_embedder, thresholds: dict):
    """Hybrid search, what clients get; and, when the model changes, dense search alone too: the
    golden queries are sentences of the chunks, which BM25 finds by itself, so a hybrid figure
    alone would let a model that returns noise through."""
    from quivr_pipelines.core import reembed_gates as g

    queries = golden_set(ctx, gen)
    modes = ("hybrid", "dense") if gen.fingerprint != serving.fingerprint else ("hybrid",)
    results = [g.check_retrieval_quality(ctx.vectors, gen.kb, serving, gen, serving_embedder,
                                         _building_embedder(ctx, gen), queries, margin=thresholds.get("margin", 0.02),
                                         min_queries=thresholds.get("min_queries", 5), mode=mode) for mode in modes]
    if len(results) == 1:
        return results[0]
    failed = [r for r in results if not r.passed]
    description = " ".join(f"{mode}: {r.description}" for mode, r in zip(modes, results))
    metadata = {**results[0].metadata, **{f"{mode}_{k}": v for mode, r in zip(modes, results)
                                          for k, v in r.metadata.items() if k in ("serving", "building", "delta")},
                "table": "\n\n".join(f"**{mode}**\n\n{r.metadata.get('table', '')}" for mode, r in zip(modes, results))}
    return g.GateResult("retrieval_quality", not failed, description, metadata)


def run_gates(ctx: ReembedContext, gen: Generation) -> list:
    return [run_gate(ctx, gen, name) for name in GATES]


@dataclass(frozen=True)
class SwapResult:
    kb: str
    serving: Generation
    previous: Generation | None
    caught_up: int
    seconds: float

    def as_dict(self) -> dict:
        return {"kb": self.kb, "generation": self.serving.generation, "collection": self.serving.collection,
                "model": self.serving.fingerprint, "previous_generation": getattr(self.previous, "generation", None),
                "previous_collection": getattr(self.previous, "collection", None),
                "documents_caught_up": self.caught_up, "seconds": round(self.seconds, 3)}


def swap(ctx: ReembedContext, kb: str, require_gates: bool = True) -> SwapResult:
    """Serve the building generation: catch it up, then under the KB's exclusive write lock
    catch up the last changes, check its counts once more and move the alias (one atomic
    update), then the catalog. Refused while its gates have not all passed."""
    started = time.perf_counter()
    gen = generations.building(ctx.db, kb)
    if gen is None:
        raise ReembedError(f"{kb} has no building generation to swap in")
    if require_gates:
        ok, failed = gates_passed(gen)
        if not ok:
            raise ReembedError(f"generation {gen.generation} of {kb} has not passed its gates"
                               + (f" (failed: {', '.join(failed)})" if failed else " (not checked yet)"))
    previous = settle(ctx, kb)
    caught_up = 0
    for _ in range(3):  # shrink what is left for the locked pass
        count = catch_up(ctx, generations.get(ctx.db, kb, gen.generation))
        caught_up += count
        if count <= CATCH_UP_LOCKED_LIMIT:
            break
    with generations.kb_write_lock(ctx.db, kb, exclusive=True, timeout_seconds=LOCK_TIMEOUT_SECONDS):
        caught_up += catch_up(ctx, generations.get(ctx.db, kb, gen.generation), locked=True)
        gen = generations.get(ctx.db, kb, gen.generation)
        problems = count_problems(ctx.vectors, gen, generations.expected_chunk_counts(ctx.db, gen))
        if problems:
            reason = f"counts differ after the last catch-up: {problems}"
            generations.update(ctx.db, kb, gen.generation, reason=reason)
            raise ReembedError(f"swap of {kb} refused: {reason}")
        ctx.vectors.set_alias(kb, gen.collection)
        generations.swap_catalog(ctx.db, kb, gen, previous)
    result = SwapResult(kb, generations.get(ctx.db, kb, gen.generation), previous, caught_up,
                        time.perf_counter() - started)
    audit.record(ctx.db, actor=ctx.actor, action="reembed_swap", target=kb, outcome="ok", detail=result.as_dict())
    ctx.say(f"{kb}: generation {gen.generation} ({gen.collection}) serves now; generation "
            f"{previous.generation} ({previous.collection}) is kept for rollback")
    return result


def count_problems(vectors, gen: Generation, expected: dict[str, int], limit: int = 5) -> str | None:
    """A short description of the documents whose point counts differ from `expected`, or None."""
    counts = vectors.chunk_counts(gen.collection, gen.kb)
    wrong = sorted(k for k in set(expected) | set(counts) if counts.get(k, 0) != expected.get(k, 0))
    if not wrong:
        return None
    shown = ", ".join(f"{k} ({counts.get(k, 0)} of {expected.get(k, 0)})" for k in wrong[:limit])
    return f"{len(wrong)} documents: {shown}" + (", ..." if len(wrong) > limit else "")


def rollback(ctx: ReembedContext, kb: str, generation: int | None = None) -> SwapResult:
    """Serve the previous generation again (the newest retired one, or `generation`). Documents
    changed since the swap are mirrored into it (re-embedded by its model when the chunks are the
    same; otherwise queued for re-ingestion, and deleted ones removed at once)."""
    started = time.perf_counter()
    current = settle(ctx, kb)
    retired = [g for g in generations.history(ctx.db, kb) if g.state == generations.RETIRED
               and (generation is None or g.generation == generation)]
    if not retired:
        raise ReembedError(f"{kb} has no retired generation to roll back to"
                           + (f" numbered {generation}" if generation is not None else "")
                           + " (past the rollback window, or never re-embedded)")
    back = max(retired, key=lambda g: (g.retired_at is not None, g.retired_at, g.generation))
    if ctx.vectors.collection_info(back.collection, exact=False) is None:
        raise ReembedError(f"generation {back.generation}'s collection {back.collection} no longer exists")
    with generations.kb_write_lock(ctx.db, kb, exclusive=True, timeout_seconds=LOCK_TIMEOUT_SECONDS):
        changed = generations.changed_since(ctx.db, kb, current.serving_since)
        requeue = _mirror_back(ctx, back, current, changed)
        ctx.vectors.set_alias(kb, back.collection)
        generations.rollback_catalog(ctx.db, kb, back, current)
        repository.reset_to_pending(ctx.db, kb, requeue)
    result = SwapResult(kb, generations.get(ctx.db, kb, back.generation), current, len(changed),
                        time.perf_counter() - started)
    audit.record(ctx.db, actor=ctx.actor, action="reembed_rollback", target=kb, outcome="ok",
                 detail={**result.as_dict(), "requeued": len(requeue)})
    ctx.say(f"{kb}: generation {back.generation} ({back.collection}) serves again; generation "
            f"{current.generation} is retired" + (f"; {len(requeue)} documents queued for re-ingestion"
                                                  if requeue else ""))
    return result


def _mirror_back(ctx: ReembedContext, back: Generation, current: Generation, changed: dict[str, dict]) -> list[str]:
    if not changed:
        return []
    gone = [k for k, r in changed.items() if r["status"] != DocumentStatus.INGESTED]
    if gone:
        ctx.vectors.delete_documents(back.collection, back.kb, gone)
    ingested = sorted(k for k in changed if k not in set(gone))
    same_chunks = all((back.chunking or {}).get(k) == (current.chunking or {}).get(k) for k in CHUNK_SIZE_FIELDS)
    embedder = ctx.registry.for_fingerprint(back.fingerprint)
    if not same_chunks or embedder is None:
        return ingested
    headers = bool(back.chunking.get("context_headers", ctx.context_headers))
    for start in range(0, len(ingested), 64):
        items = []
        for key in ingested[start:start + 64]:
            points, _ = reembedded_points(ctx, back.kb, ctx.vectors.document_points(current.collection, back.kb, key),
                                          embedder, headers)
            items.append((back.kb, key, points))
        ctx.vectors.replace_documents(back.collection, items)
    return []


def cancel(ctx: ReembedContext, kb: str, reason: str = "cancelled") -> Generation:
    """Give up the building generation: marked failed (kept for inspection until cleanup)."""
    gen = generations.building(ctx.db, kb)
    if gen is None:
        raise ReembedError(f"{kb} has no building generation")
    generations.set_state(ctx.db, kb, gen.generation, generations.FAILED, reason)
    audit.record(ctx.db, actor=ctx.actor, action="reembed_cancel", target=kb, outcome="ok",
                 detail={"generation": gen.generation, "collection": gen.collection, "reason": reason})
    return generations.get(ctx.db, kb, gen.generation)


def cleanup(ctx: ReembedContext, window: timedelta, dry_run: bool = False) -> list[Generation]:
    """Drop the collections of generations retired longer than `window` ago (and of failed
    builds untouched for that long). Never a serving or building one, never one an alias names."""
    cutoff = generations.database_now(ctx.db) - window
    dropped = []
    for gen in generations.retired_before(ctx.db, cutoff):
        if ctx.vectors.resolve_alias(gen.kb) == gen.collection:
            continue  # served after all (settle repairs the catalog on the next operation)
        if not dry_run:
            ctx.vectors.delete_collection(gen.collection)
            generations.set_state(ctx.db, gen.kb, gen.generation, generations.DELETED)
            audit.record(ctx.db, actor=ctx.actor, action="reembed_cleanup", target=gen.kb, outcome="ok",
                         detail={"generation": gen.generation, "collection": gen.collection})
        dropped.append(gen)
    return dropped


def live_collections(db: Database, vectors, kb: str) -> Iterable[str]:
    """Where a change of the KB's documents must go: the alias's collection and a building one."""
    serving = vectors.resolve_alias(kb)
    names = [serving] if serving else []
    return names + [c for c in generations.live_collections(db, kb) if c not in names]
