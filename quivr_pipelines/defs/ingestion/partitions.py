"""The dynamic partitions of `indexed_documents`: one per (KB, object key)."""

import dagster as dg

documents_partitions = dg.DynamicPartitionsDefinition(name="documents")

# Upper bound of documents per run for UI backfills (sensors size their own runs).
DOCUMENTS_PER_RUN = 100
