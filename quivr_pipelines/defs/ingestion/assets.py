"""One asset partition per document: `indexed_documents`, keyed `<kb>/<escaped object key>`.

A run carries many documents (a partition range); the body ingests them in one batch and logs,
per document, a materialization with the figures a person wants in the UI and a result for
`check_document_ingested` (failed, with the precise reason, when the document could not be
ingested). Unchanged documents inside a range are skipped cheaply and log nothing new.
"""


from collections import defaultdict

import dagster as dg

from quivr_pipelines.core.keys import partition_key, split_partition_key
from quivr_pipelines.core.pipeline import DocumentOutcome, IngestionContext, ingest_in_batches
from quivr_pipelines.defs.ingestion.partitions import DOCUMENTS_PER_RUN, documents_partitions
from quivr_pipelines.core.factory import kb_defaults
from quivr_pipelines.resources import (
    DatabaseResource, EmbedderResource, ObjectStoreResource, VectorStoreResource,
)

CHECK_NAME = "check_document_ingested"
FORCE_TAG = "quivr/force"
# A run works through its documents in batches: parsed in parallel (the next batch while this one
# is embedded), embedded together, written in one hold of the store, recorded, and shown in the
# UI. 32 one-chunk documents fill an inference batch of the local embedder.
DOCUMENTS_PER_BATCH = 32
ASSET_KEY = dg.AssetKey("indexed_documents")


@dg.multi_asset(
    specs=[dg.AssetSpec(
        ASSET_KEY,
        group_name="ingestion",
        kinds={"unstructured", "qdrant", "postgres"},
        partitions_def=documents_partitions,
        skippable=True,
        description="Documents of each knowledge base, parsed, chunked, embedded and written to Qdrant.",
    )],
    check_specs=[dg.AssetCheckSpec(
        CHECK_NAME, asset=ASSET_KEY, partitions_def=documents_partitions,
        description="Fails when the document could not be ingested; the metadata gives the reason.",
    )],
    # Outputs are optional: a document is materialized only when it was (re)processed.
    can_subset=True,
    partitions_def=documents_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=DOCUMENTS_PER_RUN),
)
def indexed_documents(
    context: dg.AssetExecutionContext,
    object_store: ObjectStoreResource,
    vector_store: VectorStoreResource,
    embedder: EmbedderResource,
    database: DatabaseResource,
):
    keys = list(context.partition_keys)
    by_kb: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        kb, object_key = split_partition_key(key)
        by_kb[kb].append(object_key)

    settings = object_store.settings
    ctx = IngestionContext(
        store=object_store.get(), vectors=vector_store.get(), embedder=embedder.get(),
        db=database.get(), defaults=kb_defaults(settings), max_bytes=settings.max_upload_bytes,
        batch_size=settings.embedding_batch_size, run_id=context.run_id,
        parse_workers=settings.parse_workers,
    )
    force = context.run.tags.get(FORCE_TAG) == "true"
    done = 0
    totals = defaultdict(int)
    for kb, object_keys in by_kb.items():
        for outcomes in ingest_in_batches(ctx, kb, object_keys, DOCUMENTS_PER_BATCH, force=force):
            for outcome in outcomes:
                totals[outcome.status] += 1
                if outcome.status not in ("unchanged", "missing"):
                    yield from _document_events(context, outcome)
            done += len(outcomes)
            context.log.info(f"documents done {done}/{len(keys)} ({dict(totals)})")


def _document_events(context: dg.AssetExecutionContext, outcome: DocumentOutcome):
    """This document's materialization (yielded) and check result (logged, partition-scoped)."""
    key = partition_key(outcome.kb, outcome.object_key)
    metadata = {
        "status": outcome.status,
        "kb": outcome.kb,
        "object_key": outcome.object_key,
        "pages": outcome.pages if outcome.pages is not None else 0,
        "elements": outcome.elements,
        "chunks": outcome.chunks,
        "tokens": outcome.tokens,
        "seconds": round(outcome.seconds, 3),
        "collection": outcome.collection or "",
        "model": outcome.model or "",
        "source_version": outcome.version or "",
        "size_bytes": outcome.size_bytes or 0,
    }
    if outcome.error_type:
        metadata["error_type"] = outcome.error_type
        metadata["reason"] = outcome.reason or ""
    yield dg.AssetMaterialization(asset_key=ASSET_KEY, partition=key, metadata=metadata)
    context.log_event(dg.AssetCheckEvaluation(
        asset_key=ASSET_KEY,
        check_name=CHECK_NAME,
        passed=outcome.ok,
        partition=key,
        severity=dg.AssetCheckSeverity.ERROR if outcome.status == "failed" else dg.AssetCheckSeverity.WARN,
        metadata={k: v for k, v in metadata.items() if k in ("status", "error_type", "reason", "chunks")},
        description=None if outcome.ok else f"{outcome.error_type}: {outcome.reason}",
    ))
