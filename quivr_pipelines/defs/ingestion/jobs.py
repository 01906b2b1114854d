import dagster as dg

from quivr_pipelines.defs.ingestion.assets import indexed_documents
from quivr_pipelines.defs.ingestion.partitions import documents_partitions
from quivr_pipelines.defs.ingestion.planning import INGEST_JOB_NAME

ingest_documents_job = dg.define_asset_job(
    INGEST_JOB_NAME,
    selection=dg.AssetSelection.assets(indexed_documents),
    partitions_def=documents_partitions,
    description="Ingest a range of documents (one or many) into their KB collections.",
    # A run killed midway is retried from scratch: ingestion is idempotent (derived point ids,
    # documents already done in the catalog are skipped), so a retry converges.
    tags={"dagster/max_retries": "2", "dagster/retry_strategy": "FROM_FAILURE"},
)
