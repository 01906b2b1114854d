"""Search and ask: the query service's logic over the plain-Python core (no FastAPI here).

Retrieval follows `core.retrieval.search` (the KB's embedder by its collection's fingerprint, KB
filter forced, one call to the store) but reads the collection once per request, so the same read
serves the choice of embedder, the 404 and the result-cache key.

Embedders (issue 11): an `EmbedderRegistry` holds the default (QUIVR_EMBEDDER & co., probed at
start-up, the one /ready reports), the local model and QUIVR_EMBEDDERS. A KB is embedded at query
time by the configured embedder of the collection behind its alias, so a re-embedding that swaps
the alias to another model's collection is served at the next request: no restart, no 409. The
409 remains for a fingerprint no configured embedder produces. Another embedder than the default
is built (no network) at its KB's first request and first reaches its provider on that request,
whose failure is a 502/503/504 like any provider error. While the default's start-up probe
fails, every keyed request gets 503 (the service is not ready), whatever its KB's model.

Caches (per process, bounded, TTL):
- query vectors, keyed by (embedder fingerprint, query text): a vector never goes stale;
- results, keyed by (KB, collection, point count, KB generation, query, top_k, mode, filters,
  fusion) (the fusion resolved to its FusionConfig, so an omitted fusion and the default one
  written out share an entry).
  The generation is max(documents.updated_at) of the KB in the catalog (one index probe):
  ingestion writes a document's points and THEN its catalog row, so every re-ingested,
  changed or deleted document moves it; a re-embedding swaps the alias to a new collection;
  and points deleted outside the catalog (reconciliation) change the (approximate) point count,
  or else the TTL retires the entry. A query
  racing an ingestion may cache the new points under the old generation, which the catalog
  write then retires: an entry can be stale only inside that window, never after it.
  Known limit: two catalog transactions on the same KB that commit in the opposite order of
  their start times (concurrent runs) can leave max(updated_at) unchanged for the second one;
  its change is then seen when the point count changes or the entry's TTL ends (at most
  QUIVR_QUERY_CACHE_TTL_SECONDS). A per-KB counter bumped by a trigger would close this at the
  price of a contended row on every document write; not worth it for a TTL-bounded cache.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from quivr_pipelines.core import sparse
from quivr_pipelines.core.catalog.database import Database
from quivr_pipelines.core.embedding.base import Embedder
from quivr_pipelines.core.embedding.registry import EmbedderRegistry
from quivr_pipelines.core.events import event_logger
from quivr_pipelines.core.generations import generation_of
from quivr_pipelines.core.keys import KB_NAME_PATTERN
from quivr_pipelines.core.llm import (
    EXTRACTIVE_NOTE,
    NO_PASSAGE_ANSWER,
    LLMClient,
    LLMError,
    Passage,
    as_provider_error,
    build_messages,
    cost_dollars,
    extractive_pieces,
)
from quivr_pipelines.core.retrieval import FingerprintMismatch, embedder_for_collection
from quivr_pipelines.core.vectorstore.base import DEFAULT_FUSION, CollectionInfo, SearchFilter
from quivr_pipelines.core.vectorstore.handoff import StoreBusy
from quivr_pipelines.service.caches import TTLCache
from quivr_pipelines.service.metrics import Metrics
from quivr_pipelines.service.schemas import (
    AskRequest,
    AskResponse,
    Citation,
    Filters,
    SearchRequest,
    SearchResponse,
    SearchResult,
)
from quivr_pipelines.service.writer import BatchWriter, UsageRow


class UnknownKB(KeyError):
    pass


class VectorStoreUnavailable(RuntimeError):
    """The vector store failed (server down, store busy): 503, the request can be retried."""


class EmbedderStarting(LLMError):
    """The embedding provider has not answered since start-up: 503 with Retry-After, not 500."""

    def __init__(self):
        super().__init__("the embedding provider is not reachable yet (its start-up probe keeps failing); "
                         "retry shortly", 503, 5)


@dataclass(frozen=True)
class Retrieved:
    results: list[SearchResult]
    cached: bool
    embedding_tokens: int
    embedding_cached: bool
    model: str | None = None  # the fingerprint of the collection that answered
    generation: int | None = None  # its generation (kb_<kb>__<model>__g<n>; 0 for a legacy name)


def scoped_filter(kb: str, filters: Filters | None) -> SearchFilter:
    """The request's filters with the KB forced: no filter can reach another KB's points."""
    f = filters or Filters()
    return SearchFilter(
        kb=kb,
        document_key_prefix=f.document_key_prefix,
        content_types=tuple(sorted(set(f.content_types or ()))),
        ingested_after=f.ingested_after.isoformat() if f.ingested_after else None,
        ingested_before=f.ingested_before.isoformat() if f.ingested_before else None,
    )


def _result(hit, expose_source_uri: bool = False) -> SearchResult:
    """`source_uri` is the stored URI (file:///srv/..., s3://bucket/...) only when the deployment
    opts in (QUIVR_SERVICE_EXPOSE_SOURCE_URI): by default clients see the KB-relative document
    key, so no server path, bucket or prefix leaks through results or citations."""
    p = hit.payload
    source_uri = p.get("source_uri") if expose_source_uri else p.get("document_key")
    return SearchResult(text=p.get("text", ""), score=float(hit.score), document_key=p.get("document_key"),
                        page_number=p.get("page_number"), source_uri=source_uri,
                        chunk_index=p.get("chunk_index"), content_type=p.get("content_type"),
                        section_title=p.get("section_title"))


def sse(event: str, data) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


class QueryService:
    def __init__(self, settings, db: Database, store, embedder, llm: LLMClient | None,
                 metrics: Metrics, writer: BatchWriter, registry: EmbedderRegistry | None = None):
        """`embedder` is the default; `registry` (built around it when not given) the others."""
        self.settings = settings
        self.db = db
        self.store = store
        self.registry = registry if registry is not None else EmbedderRegistry(settings, default=embedder)
        self.embedder = self.registry.default
        self.llm = llm
        self.metrics = metrics
        self.writer = writer
        self.results = TTLCache(settings.query_cache_size, settings.query_cache_ttl_seconds)
        self.vectors = TTLCache(settings.query_embedding_cache_size, settings.query_embedding_cache_ttl_seconds)
        self._fingerprint_lock = threading.Lock()
        self._started: set[str] = set()  # dependencies up (see start)
        self._start_errors: dict[str, str] = {}
        self._first_round = threading.Event()
        self._stopping = threading.Event()
        self._probes = ThreadPoolExecutor(max_workers=2, thread_name_prefix="quivr-probe")

    @classmethod
    def from_settings(cls, settings, metrics: Metrics) -> QueryService:
        """Builds every client without reaching any dependency: the pool connects in the
        background and `start()` does the rest, so a database or an embedding provider that is
        down at start-up makes the service not ready (503) instead of failing to start."""
        from quivr_pipelines.core.catalog.database import open_database
        from quivr_pipelines.core.factory import build_embedder, build_vector_store
        from quivr_pipelines.core.llm import build_llm

        db = open_database(settings, migrate=False)
        store = build_vector_store(settings, keep_open=True)
        embedder = build_embedder(settings)
        return cls(settings, db, store, embedder, build_llm(settings), metrics,
                   BatchWriter(db, settings.audit_flush_seconds, metrics),
                   EmbedderRegistry(settings, default=embedder))

    def start(self, wait_seconds: float = 10.0) -> None:
        """Bring the dependencies up: migrations (they need the database) and the embedder
        (the local model's first inference is several times slower, so it is paid here; an
        OpenAI embedder without configured dimensions probes them). A background thread
        retries whatever failed (1 s, doubling to 5 s) until everything is up; this returns
        when the first round is done or after `wait_seconds`, whichever comes first."""
        self._starter = threading.Thread(target=self._start_dependencies, daemon=True,
                                         name="quivr-service-start")
        self._starter.start()
        self._first_round.wait(wait_seconds)

    def _start_dependencies(self) -> None:
        steps = {"database": self.db.migrate, "embedder": self._start_embedder}
        delay = 1.0
        while not self._stopping.is_set():
            for name, step in list(steps.items()):
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - reported by /ready, retried here
                    self._start_errors[name] = type(exc).__name__
                    event_logger().warning("dependency_unavailable", dependency=name,
                                           error_type=type(exc).__name__, retry_in_seconds=delay)
                else:
                    self._start_errors.pop(name, None)
                    self._started.add(name)
                    del steps[name]
            self._first_round.set()
            if not steps:
                return
            self._stopping.wait(delay)
            delay = min(delay * 2, 5.0)

    def not_started(self) -> dict[str, str]:
        """Dependencies whose start failed so far, with the error type."""
        return dict(self._start_errors)

    def _start_embedder(self) -> None:
        with self._fingerprint_lock:
            self.embedder.fingerprint  # noqa: B018 - an OpenAI embedder may probe its dimensions
        if self.embedder.provider == "local":
            self.embedder.embed(["warm up"])

    def close(self) -> None:
        """Audit and usage rows first (they need the database), then the store and the pool."""
        self._stopping.set()
        self._probes.shutdown(wait=False)
        try:
            self.writer.close()
        finally:
            try:
                self.store.close()
            finally:
                self.db.close()

    # -- readiness -------------------------------------------------------------------------------
    async def run_probe(self, fn):
        """Run a blocking probe on the service's own two threads (see router.ready)."""
        return await asyncio.get_running_loop().run_in_executor(self._probes, fn)

    def check_ready(self) -> dict[str, str]:
        """Each dependency's state, named without its error message (this is unauthenticated:
        messages can carry hosts, users or a provider's echo of a key); the log has the rest."""
        checks = {}
        try:
            with self.db.pool.connection(timeout=min(3.0, self.settings.database_pool_timeout_seconds)) as conn:
                conn.execute("SELECT 1")
            checks["database"] = "ok" if "database" in self._started else "starting: migrations not applied yet"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            checks["database"] = f"unreachable ({type(exc).__name__})"
        if "embedder" in self._started:
            checks["embedder"] = "ok"
        else:
            error = self._start_errors.get("embedder")
            checks["embedder"] = f"unreachable ({error})" if error else "starting"
        try:
            self.store.list_collections()
            checks["vector_store"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["vector_store"] = f"unreachable ({type(exc).__name__})"
        return checks

    # -- retrieval -------------------------------------------------------------------------------
    def collection(self, kb: str) -> tuple[CollectionInfo, Embedder]:
        """The collection behind the KB's alias and the configured embedder of its fingerprint:
        404 without one, 409 when no configured embedder produces its fingerprint."""
        if not KB_NAME_PATTERN.match(kb):
            raise UnknownKB(kb)
        if "embedder" not in self._started:  # the default's start-up probe is still failing: fail fast
            raise EmbedderStarting()
        try:
            # Approximate count: an exact one costs ~10 ms at 100k points on every request; the
            # result cache key only needs it to notice points removed outside the catalog.
            info = self.store.collection_info(kb, exact=False)
        except StoreBusy:
            raise
        except Exception as exc:  # any store failure is the same to the caller
            raise VectorStoreUnavailable(f"vector store unavailable ({type(exc).__name__})") from exc
        if info is None:
            raise UnknownKB(kb)
        try:
            return info, embedder_for_collection(self.registry, kb, info)
        except FingerprintMismatch:
            raise
        except Exception as exc:  # noqa: BLE001 - building it failed (a missing model package): 502, not 500
            raise as_provider_error(exc, 0, "embedding", info.fingerprint.partition(":")[0]) from None

    def generation(self, kb: str) -> str:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT max(updated_at) FROM documents WHERE kb = %s", (kb,)).fetchone()
        return row[0].isoformat() if row and row[0] else ""

    def embed_query(self, kb: str, query: str, key_id: str | None,
                    embedder: Embedder | None = None) -> tuple[list[float], int, bool]:
        """`embedder`: the KB's (from `collection`); the default when not given."""
        if embedder is None:
            if "embedder" not in self._started:
                raise EmbedderStarting()
            embedder = self.embedder
        provider, model = embedder.provider, embedder.model
        fingerprint = embedder.fingerprint  # known without a call: probed at start-up, or requested
        cache_key = (fingerprint, query)
        vector = self.vectors.get(cache_key)
        if vector is not None:
            self.metrics.cache.labels("embedding", "hit").inc()
            self.writer.add(UsageRow(kind="query_embedding", provider=provider, model=model,
                                     kb=kb, inputs=1, cached_inputs=1, api_key_id=key_id))
            return vector, 0, True
        self.metrics.cache.labels("embedding", "miss").inc()
        try:
            batch = embedder.embed([query])
        except Exception as exc:  # openai errors become 502/503/504, others 502
            raise as_provider_error(exc, getattr(self.settings, "openai_max_retries", 0), "embedding",
                                    provider) from exc
        vector = batch.vectors[0].tolist()
        expected = int(fingerprint.rpartition(":")[2])
        if len(vector) != expected:  # a model that ignored the `dimensions` it was asked for
            raise LLMError(f"the embedding provider ({provider}) returned {len(vector)}-dimensional vectors "
                           f"for {fingerprint}: {model} does not shorten its vectors as requested", 502)
        self.vectors.set(cache_key, vector)
        self.metrics.embedding_tokens.labels(model).inc(batch.tokens)
        self.writer.add(UsageRow(kind="query_embedding", provider=provider, model=model,
                                 kb=kb, prompt_tokens=batch.tokens, inputs=1, api_key_id=key_id))
        return vector, batch.tokens, False

    def retrieve(self, kb: str, req: SearchRequest, key_id: str | None) -> Retrieved:
        info, embedder = self.collection(kb)
        flt = scoped_filter(kb, req.filters)
        fusion = (req.fusion_config() or DEFAULT_FUSION) if req.mode == "hybrid" else None
        cache_key = (kb, info.name, info.points, self.generation(kb), req.query, req.top_k, req.mode, flt, fusion)
        cached = self.results.get(cache_key)
        if cached is not None:
            self.metrics.cache.labels("results", "hit").inc()
            self.metrics.results_count.observe(len(cached))
            return Retrieved(cached, True, 0, False, info.fingerprint, generation_of(info.name))
        self.metrics.cache.labels("results", "miss").inc()
        started = time.perf_counter()
        dense, tokens, embedding_cached = (None, 0, False)
        if req.mode != "sparse":
            dense, tokens, embedding_cached = self.embed_query(kb, req.query, key_id, embedder)
        try:
            hits = self.store.search(info.name, dense, sparse.query_vector(req.query), req.top_k, flt, req.mode,
                                     fusion)
        except StoreBusy:
            raise
        except Exception as exc:
            raise VectorStoreUnavailable(f"vector store unavailable ({type(exc).__name__})") from exc
        expose = self.settings.service_expose_source_uri
        results = [_result(hit, expose) for hit in hits if hit.payload.get("kb") == kb]  # belt and braces
        self.metrics.retrieval_duration.labels(req.mode).observe(time.perf_counter() - started)
        self.metrics.results_count.observe(len(results))
        self.results.set(cache_key, results)
        return Retrieved(results, False, tokens, embedding_cached, info.fingerprint, generation_of(info.name))

    def search(self, kb: str, req: SearchRequest, key_id: str | None) -> SearchResponse:
        started = time.perf_counter()
        got = self.retrieve(kb, req, key_id)
        return SearchResponse(kb=kb, query=req.query, mode=req.mode, results=got.results,
                              took_ms=round((time.perf_counter() - started) * 1000, 2), cached=got.cached,
                              model=got.model, generation=got.generation)

    # -- answers ---------------------------------------------------------------------------------
    @staticmethod
    def passages(results: list[SearchResult]) -> list[Passage]:
        return [Passage(n=i, text=r.text, document_key=r.document_key, page_number=r.page_number,
                        source_uri=r.source_uri, score=r.score) for i, r in enumerate(results, start=1)]

    @staticmethod
    def citations(passages: list[Passage]) -> list[Citation]:
        return [Citation(n=p.n, document_key=p.document_key, page_number=p.page_number,
                         source_uri=p.source_uri, text=p.text, score=p.score) for p in passages]

    def _record_completion(self, kb: str, completion, seconds: float, key_id: str | None) -> float:
        cost = cost_dollars(completion.prompt_tokens, completion.completion_tokens,
                            self.settings.llm_price_prompt_per_million,
                            self.settings.llm_price_completion_per_million)
        self.metrics.generation_duration.labels(completion.model).observe(seconds)
        self.metrics.llm_tokens.labels(completion.model, "prompt").inc(completion.prompt_tokens)
        self.metrics.llm_tokens.labels(completion.model, "completion").inc(completion.completion_tokens)
        self.metrics.llm_cost.labels(completion.model).inc(cost)
        self.writer.add(UsageRow(kind="llm_completion", provider=self.llm.provider, model=completion.model,
                                 kb=kb, prompt_tokens=completion.prompt_tokens,
                                 completion_tokens=completion.completion_tokens, inputs=1,
                                 api_key_id=key_id))
        return cost

    def _usage(self, got: Retrieved, completion=None, cost: float = 0.0) -> dict:
        return {"embedding_tokens": got.embedding_tokens, "embedding_cached": got.embedding_cached,
                "results_cached": got.cached,
                "prompt_tokens": completion.prompt_tokens if completion else 0,
                "completion_tokens": completion.completion_tokens if completion else 0,
                "cost_dollars": round(cost, 8)}

    def _generation_params(self, req: AskRequest) -> tuple[float, int]:
        temperature = req.temperature if req.temperature is not None else self.settings.llm_temperature
        return temperature, req.max_tokens or self.settings.llm_max_tokens

    def ask(self, kb: str, req: AskRequest, key_id: str | None) -> AskResponse:
        got = self.retrieve(kb, req, key_id)
        passages = self.passages(got.results)
        citations = self.citations(passages)
        if self.llm is None:
            return AskResponse(answer="".join(extractive_pieces(passages)), citations=citations, model=None,
                               extractive=True, note=EXTRACTIVE_NOTE, usage=self._usage(got))
        if not passages:
            return AskResponse(answer=NO_PASSAGE_ANSWER, citations=[], model=self.llm.model, extractive=False,
                               note="no passage matched: the LLM was not called", usage=self._usage(got))
        temperature, max_tokens = self._generation_params(req)
        started = time.perf_counter()
        completion = self.llm.complete(build_messages(req.query, passages), temperature, max_tokens)
        cost = self._record_completion(kb, completion, time.perf_counter() - started, key_id)
        return AskResponse(answer=completion.text, citations=citations, model=completion.model,
                           extractive=False, note=None, usage=self._usage(got, completion, cost))

    def ask_stream(self, kb: str, req: AskRequest, key_id: str | None) -> Iterator[str]:
        """Retrieval and the LLM's first request happen before this returns, so their errors
        still get a proper HTTP status; later failures become an `error` event."""
        got = self.retrieve(kb, req, key_id)
        passages = self.passages(got.results)
        citations = [c.model_dump() for c in self.citations(passages)]
        if self.llm is None or not passages:
            pieces = extractive_pieces(passages) if self.llm is None else [NO_PASSAGE_ANSWER]
            done = {"model": None if self.llm is None else self.llm.model, "extractive": self.llm is None,
                    "note": EXTRACTIVE_NOTE if self.llm is None else "no passage matched: the LLM was not called",
                    "usage": self._usage(got)}

            def extractive() -> Iterator[str]:
                yield sse("citations", citations)
                for piece in pieces:
                    yield sse("token", {"text": piece})
                yield sse("done", done)

            return extractive()
        temperature, max_tokens = self._generation_params(req)
        started = time.perf_counter()
        tokens = self.llm.stream(build_messages(req.query, passages), temperature, max_tokens)

        def generated() -> Iterator[str]:
            pieces = iter(tokens)
            try:
                yield sse("citations", citations)
                for piece in pieces:
                    yield sse("token", {"text": piece})
            except LLMError as exc:
                yield sse("error", {"detail": str(exc), "status": exc.status_code})
                return
            finally:
                close = getattr(pieces, "close", None)
                if close:
                    close()
            completion = tokens.completion
            cost = self._record_completion(kb, completion, time.perf_counter() - started, key_id)
            yield sse("done", {"model": completion.model, "extractive": False, "note": None,
                               "usage": self._usage(got, completion, cost)})

        return generated()
