"""Helpers shared by the tests: run ingestion through Dagster and read what it produced."""

from __future__ import annotations

import dagster as dg

from quivr_pipelines.core.catalog import repository
from quivr_pipelines.core.factory import build_vector_store, open_database
from quivr_pipelines.runner import ingest_now
from quivr_pipelines.settings import get_settings


def ingest(instance: dg.DagsterInstance | None = None, **kwargs) -> tuple[dict, dg.DagsterInstance]:
    instance = instance or dg.DagsterInstance.ephemeral()
    summary = ingest_now(get_settings(), instance=instance, **kwargs)
    return summary, instance


def ingest_documents_job():
    """The ingestion job, reconstructable (`dg.reconstructable(ingest_documents_job)`) for
    re-executions in a fresh process, as the run-retry daemon launches them."""
    from quivr_pipelines.definitions import defs
    from quivr_pipelines.defs.ingestion.jobs import INGEST_JOB_NAME

    return defs().resolve_job_def(INGEST_JOB_NAME)


def catalog_rows(kb: str) -> dict[str, dict]:
    db = open_database(get_settings())
    try:
        return repository.get_documents(db, kb)
    finally:
        db.close()


def all_points(kb: str) -> dict[str, list]:
    """document key -> its points (payloads), read through the KB alias."""
    store = build_vector_store(get_settings())
    try:
        keys = {row["object_key"] for row in catalog_rows(kb).values()}
        return {key: store.document_points(kb, kb, key) for key in sorted(keys)}
    finally:
        store.close()


def normalise(text: str) -> str:
    return " ".join(text.split()).lower()
