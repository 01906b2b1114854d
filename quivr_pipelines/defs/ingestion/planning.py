"""Turn a set of documents to ingest into a few runs, each carrying many documents.

Dynamic partitions keep their insertion order, so documents registered together are contiguous
and a batch becomes one partition-key range (a single run). Changed documents scattered among
older ones make ranges that also cover unchanged documents; those cost one catalog comparison
each inside the run (no read, no parse, no embedding) and log nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG,
)

from quivr_pipelines.defs.ingestion.partitions import documents_partitions

INGEST_JOB_NAME = "ingest_documents_job"


def batch_ranges(ordered_partitions: Sequence[str], targets: Sequence[str], max_documents: int,
                 sizes: dict[str, int] | None = None, max_bytes: int | None = None) -> list[tuple[str, str, int]]:
    """(first, last, documents) ranges in partition order, at most `max_documents` targets and
    about `max_bytes` of source each."""
    position = {key: i for i, key in enumerate(ordered_partitions)}
    ordered = sorted(set(targets), key=lambda k: position[k])
    ranges, current, current_bytes = [], [], 0
    for key in ordered:
        size = (sizes or {}).get(key, 0)
        if current and (len(current) >= max_documents or (max_bytes and current_bytes + size > max_bytes)):
            ranges.append((current[0], current[-1], len(current)))
            current, current_bytes = [], 0
        current.append(key)
        current_bytes += size
    if current:
        ranges.append((current[0], current[-1], len(current)))
    return ranges


def run_request(first: str, last: str, documents: int, run_key: str | None = None) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run_key,
        job_name=INGEST_JOB_NAME,
        tags={
            ASSET_PARTITION_RANGE_START_TAG: first,
            ASSET_PARTITION_RANGE_END_TAG: last,
            "quivr/documents": str(documents),
        },
    )


def partition_order(instance: dg.DagsterInstance, added: Sequence[str] = ()) -> list[str]:
    existing = list(instance.get_dynamic_partitions(documents_partitions.name))
    known = set(existing)
    return existing + [key for key in added if key not in known]
