"""The ingestion job and the run requests that start it."""

from __future__ import annotations

import dagster as dg

from quivr_pipelines.core.sync import RunBatch
from quivr_pipelines.defs.ingestion.documents import IngestConfig, indexed_documents

INGEST_JOB_NAME = "ingest_documents_job"
DOCUMENTS_TAG = "quivr/documents"

ingest_documents_job = dg.define_asset_job(
    INGEST_JOB_NAME,
    selection=dg.AssetSelection.assets(indexed_documents),
    description="Ingest documents of one KB (a list, or all that are new or changed) into its collection.",
    # A run killed midway is retried from failure: ingestion is idempotent (derived point ids,
    # documents already done in the catalog are skipped), so a retry converges.
    tags={"dagster/max_retries": "2", "dagster/retry_strategy": "FROM_FAILURE"},
)


def ingest_run_request(batch: RunBatch, run_key: str | None = None, force: bool = False) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run_key,
        job_name=INGEST_JOB_NAME,
        partition_key=batch.kb,
        run_config=dg.RunConfig(ops={indexed_documents.op.name: IngestConfig(
            documents=batch.documents, force=force)}),
        tags={DOCUMENTS_TAG: str(len(batch.documents))},
    )
