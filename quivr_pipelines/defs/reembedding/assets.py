"""Re-embedding and re-chunking a KB with zero downtime, as assets with blocking checks.

`reembed_job` (launchpad config: `ReembedConfig`, or `quivr-pipelines reembed KB ...`):

1. `kb_generation` builds (or resumes) the KB's next collection generation beside the serving
   one: a copy with the target model, or a re-chunking; progress (chunks done / total, rate,
   ETA) in the run's log and the materialization.
2. Five blocking checks on it (ERROR, one property each): every ingested document's chunks are
   there, the vector size and the fingerprint are the target's, the payload indexes exist, and
   the golden set retrieves about as well as on the serving generation. A failed one stops the
   run before the swap and says why; the building generation stays for inspection.
3. `kb_serving_generation` catches the new generation up with the last changes and swaps the
   alias atomically (queries never see a half state); the previous one is kept for the rollback
   window (QUIVR_REEMBED_ROLLBACK_HOURS).

The checks find their generation by the run's id (`generations.of_run`), so they need no config.
"""


import time

import dagster as dg
from pydantic import Field

from quivr_pipelines.core import audit, generations, reembed
from quivr_pipelines.resources import (
    DatabaseResource,
    EmbedderResource,
    ObjectStoreResource,
    ParserResource,
    VectorStoreResource,
)

GROUP = "reembedding"
GENERATION = dg.AssetKey("kb_generation")
PROGRESS_EVERY_SECONDS = 10.0


class ReembedConfig(dg.Config):
    """What `reembed_job` builds for one KB."""

    kb: str = Field(description="The knowledge base to re-embed or re-chunk.")
    embedder: str | None = Field(
        default=None, description="Target model: `local`, `openai:MODEL[:DIMS][@BASE_URL]`. Unset: the serving model "
                                  "(then only the chunking changes).")
    chunk_max_characters: int | None = Field(default=None, ge=100, description="New chunk size. Unset: unchanged.")
    chunk_new_after_characters: int | None = Field(default=None, ge=50)
    chunk_combine_under_characters: int | None = Field(default=None, ge=0)
    chunk_overlap_characters: int | None = Field(default=None, ge=0)
    context_headers: bool | None = Field(default=None, description="Embed chunks with their headers. Unset: as now.")
    quality_margin: float | None = Field(
        default=None, ge=0, le=1, description="Largest allowed drop of recall@10 and nDCG@10 on the golden set. "
                                              "Unset: QUIVR_REEMBED_QUALITY_MARGIN.")
    golden_set_size: int = Field(default=50, ge=5, le=1000,
                                 description="Queries generated from the KB's chunks (without a .quivr/golden.jsonl).")
    min_golden_queries: int = Field(default=5, ge=1)

    def target(self) -> reembed.Target:
        sizes = {name: getattr(self, name) for name in ("chunk_max_characters", "chunk_new_after_characters",
                                                         "chunk_combine_under_characters", "chunk_overlap_characters")
                 if getattr(self, name) is not None}
        return reembed.Target(embedder=self.embedder, chunking=sizes, context_headers=self.context_headers)


def reembed_context(run_id: str, vector_store, database, embedder, object_store=None,
                    parser=None, say=None) -> reembed.ReembedContext:
    from quivr_pipelines.core.embedding.registry import EmbedderRegistry
    from quivr_pipelines.settings import get_settings

    settings = get_settings()
    return reembed.ReembedContext(
        vectors=vector_store.get(), db=database.get(),
        registry=EmbedderRegistry(settings, default=embedder.get()),
        defaults=parser.kb_defaults() if parser is not None else _defaults(settings),
        objects=object_store.get() if object_store is not None else None,
        max_bytes=parser.max_upload_bytes if parser is not None else settings.max_upload_bytes,
        batch_size=embedder.batch_size, run_id=run_id, parser=parser.pool if parser is not None else None,
        context_headers=settings.chunk_context_headers, page_size=settings.reembed_page_size, actor=audit.run_actor(run_id),
        say=say or (lambda _: None))


def _defaults(settings):
    from quivr_pipelines.core.factory import kb_defaults

    return kb_defaults(settings)


@dg.asset(
    key=GENERATION,
    group_name=GROUP,
    kinds={"qdrant", "postgres"},
    deps=["indexed_documents"],
    description="A KB's next collection generation (another model or other chunk sizes), built beside "
                "the serving one; resumable. Its checks gate the swap.",
)
def kb_generation(context: dg.AssetExecutionContext, config: ReembedConfig, vector_store: VectorStoreResource,
                  database: DatabaseResource, embedder: EmbedderResource, object_store: ObjectStoreResource,
                  parser: ParserResource) -> dg.MaterializeResult:
    from quivr_pipelines.settings import get_settings

    ctx = reembed_context(context.run.run_id, vector_store, database, embedder, object_store, parser,
                          say=context.log.info)
    gen = reembed.start_or_resume(ctx, config.kb, config.target())
    margin = config.quality_margin if config.quality_margin is not None else get_settings().reembed_quality_margin
    reembed.set_thresholds(ctx, gen, margin, config.golden_set_size, config.min_golden_queries)
    last = [0.0]

    def progress(p: reembed.Progress) -> None:
        if time.monotonic() - last[0] >= PROGRESS_EVERY_SECONDS or p.done >= p.total:
            last[0] = time.monotonic()
            context.log.info(p.line())

    gen = reembed.build(ctx, gen, progress)
    context.log.info(f"generation {gen.generation} built: {gen.chunks_done} chunks in {gen.build_seconds:.1f} s")
    return dg.MaterializeResult(metadata=generation_metadata(gen))


def generation_metadata(gen: generations.Generation) -> dict:
    rate = gen.chunks_done / gen.build_seconds if gen.build_seconds else 0.0
    return {
        "kb": dg.MetadataValue.text(gen.kb),
        "generation": dg.MetadataValue.int(gen.generation),
        "collection": dg.MetadataValue.text(gen.collection),
        "model": dg.MetadataValue.text(gen.fingerprint),
        "mode": dg.MetadataValue.text(gen.mode),
        "state": dg.MetadataValue.text(gen.state),
        "source_generation": dg.MetadataValue.int(gen.source_generation or 0),
        "chunks_done": dg.MetadataValue.int(gen.chunks_done),
        "chunks_total": dg.MetadataValue.int(gen.chunks_total),
        "chunks_from_cache": dg.MetadataValue.int(gen.chunks_cached),
        "chunks_embedded": dg.MetadataValue.int(gen.chunks_embedded),
        "tokens": dg.MetadataValue.int(gen.tokens),
        "build_seconds": dg.MetadataValue.float(round(gen.build_seconds, 3)),
        "chunks_per_second": dg.MetadataValue.float(round(rate, 2)),
        "chunking": dg.MetadataValue.json(gen.chunking or {}),
    }


def _check(name: str, description: str):
    @dg.asset_check(asset=GENERATION, name=f"check_generation_{name}", blocking=True, description=description)
    def check(context: dg.AssetCheckExecutionContext, vector_store: VectorStoreResource, database: DatabaseResource,
              embedder: EmbedderResource, object_store: ObjectStoreResource) -> dg.AssetCheckResult:
        ctx = reembed_context(context.run.run_id, vector_store, database, embedder, object_store)
        gen = generations.of_run(ctx.db, context.run.run_id)
        if gen is None:
            return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                       description="no generation was built by this run")
        result = reembed.run_gate(ctx, gen, name)
        metadata = {k: (dg.MetadataValue.md(v) if k == "table" else v) for k, v in result.metadata.items()}
        return dg.AssetCheckResult(passed=result.passed, severity=dg.AssetCheckSeverity.ERROR,
                                   description=f"{gen.kb} generation {gen.generation}: {result.description}",
                                   metadata={"kb": gen.kb, "generation": gen.generation, **metadata})

    return check


check_generation_documents_complete = _check(
    "documents_complete", "Every document the catalog holds as ingested has all its chunks in the new generation "
                          "(counts per document).")
check_generation_dimensions = _check("dimensions", "The new generation's vectors have the target model's size.")
check_generation_fingerprint = _check(
    "fingerprint", "The new generation (collection and points) records the target model's fingerprint.")
check_generation_payload_indexes = _check("payload_indexes", "Every filtered payload field has its index.")
check_generation_retrieval_quality = _check(
    "retrieval_quality", "recall@10 and nDCG@10 on the KB's golden set are not worse than the serving "
                         "generation's by more than the margin.")


@dg.asset(
    group_name=GROUP,
    kinds={"qdrant", "postgres"},
    deps=[GENERATION],
    description="The generation each KB's alias serves: moved to a new one only when all its checks passed "
                "(one atomic alias update); the previous one is kept for the rollback window.",
)
def kb_serving_generation(context: dg.AssetExecutionContext, vector_store: VectorStoreResource,
                          database: DatabaseResource, embedder: EmbedderResource, object_store: ObjectStoreResource,
                          parser: ParserResource) -> dg.MaterializeResult:
    ctx = reembed_context(context.run.run_id, vector_store, database, embedder, object_store, parser,
                          say=context.log.info)
    gen = generations.of_run(ctx.db, context.run.run_id)
    if gen is None or gen.state != generations.BUILDING:
        raise dg.Failure(description="this run built no generation that can be swapped in")
    result = reembed.swap(ctx, gen.kb)
    return dg.MaterializeResult(metadata={**generation_metadata(result.serving),
                                          "previous_generation": dg.MetadataValue.int(result.previous.generation),
                                          "previous_collection": dg.MetadataValue.text(result.previous.collection),
                                          "documents_caught_up": dg.MetadataValue.int(result.caught_up),
                                          "swap_seconds": dg.MetadataValue.float(round(result.seconds, 3))})
