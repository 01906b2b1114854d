"""The Dagster resources, one per resource key, bound here from `Settings` and nowhere else.

Each key has an abstract resource type that assets and sensors declare (its `get()` returns the
core Protocol: `ObjectStore`, `VectorStore`, `Embedder`, `Database`) and one subclass per
implementation, with explicit fields, so the UI's resource page shows what a run uses. The
embedded twin is bound unless its production variable is set (QUIVR_OBJECT_STORE=s3,
QUIVR_QDRANT_URL, QUIVR_EMBEDDER=openai, QUIVR_DATABASE_URL). Secrets are bound as `dg.EnvVar`:
the UI shows the variable's name, never its value, and the value is read when a run starts.
Tests hand twins as instances: `dg.materialize(..., resources={"object_store": LocalFolderResource(root=...)})`.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from quivr_pipelines.resources.backups import BackupResource
from quivr_pipelines.resources.database import DatabaseResource
from quivr_pipelines.resources.embedder import EmbedderResource, LocalEmbedderResource, OpenAIEmbedderResource
from quivr_pipelines.resources.object_store import LocalFolderResource, ObjectStoreResource, S3Resource
from quivr_pipelines.resources.parser import PARSE_LIMIT_FIELDS, ParserResource
from quivr_pipelines.resources.sync import SyncResource
from quivr_pipelines.resources.vector_store import (
    EmbeddedVectorStoreResource,
    QdrantServerResource,
    VectorStoreResource,
)
from quivr_pipelines.settings import Settings

__all__ = [
    "BackupResource", "DatabaseResource", "EmbedderResource", "LocalEmbedderResource", "OpenAIEmbedderResource",
    "ObjectStoreResource", "LocalFolderResource", "S3Resource", "ParserResource", "SyncResource",
    "VectorStoreResource", "EmbeddedVectorStoreResource", "QdrantServerResource",
    "resources_from_settings",
]


def _secret(present: Any, *names: str) -> dg.EnvVar | None:
    """The first of `names` set in the environment, as an EnvVar; None when there is no secret.
    (A value only in `.env` is bound by its first name: `dagster dev` and the CLI load `.env`.)"""
    if present is None:
        return None
    return dg.EnvVar(next((name for name in names if name in os.environ), names[0]))


def resources_from_settings(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    if settings.object_store == "s3":
        if not settings.s3_bucket:
            raise ValueError("QUIVR_OBJECT_STORE=s3 needs QUIVR_S3_BUCKET")
        object_store: ObjectStoreResource = S3Resource(
            bucket=settings.s3_bucket, prefix=settings.s3_prefix, region=settings.s3_region,
            endpoint_url=settings.s3_endpoint_url)
    else:
        object_store = LocalFolderResource(root=str(settings.inbox_dir),
                                           allow_hardlinks=settings.local_allow_hardlinks)
    if settings.qdrant_url:
        vector_store: VectorStoreResource = QdrantServerResource(
            url=settings.qdrant_url, api_key=_secret(settings.qdrant_api_key, "QUIVR_QDRANT_API_KEY"),
            prefer_grpc=settings.qdrant_prefer_grpc, timeout_seconds=settings.qdrant_timeout_seconds)
    else:
        vector_store = EmbeddedVectorStoreResource(path=str(settings.qdrant_dir))
    if settings.embedder == "openai":
        embedder: EmbedderResource = OpenAIEmbedderResource(
            model=settings.openai_embedding_model, dimensions=settings.openai_embedding_dimensions,
            base_url=settings.openai_base_url, max_retries=settings.openai_max_retries,
            api_key=_secret(settings.openai_api_key, "QUIVR_OPENAI_API_KEY", "OPENAI_API_KEY"),
            batch_size=settings.embedding_batch_size)
    else:
        embedder = LocalEmbedderResource(batch_size=settings.embedding_batch_size)
    database = DatabaseResource(
        url=_secret(settings.database_url, "QUIVR_DATABASE_URL"),
        embedded_dir=None if settings.database_url else str(settings.postgres_dir),
        schema_name=settings.database_schema, pool_size=settings.database_pool_size)
    parser = ParserResource(
        workers=settings.parse_workers, max_upload_size_mb=settings.max_upload_size_mb,
        chunk_max_characters=settings.chunk_max_characters,
        chunk_new_after_characters=settings.chunk_new_after_characters,
        chunk_combine_under_characters=settings.chunk_combine_under_characters,
        chunk_overlap_characters=settings.chunk_overlap_characters, pii=settings.pii,
        **{name: getattr(settings, name) for name in PARSE_LIMIT_FIELDS})
    sync = SyncResource(
        documents_per_run=settings.documents_per_run, objects_per_tick=settings.sync_objects_per_tick,
        max_run_megabytes=settings.sync_max_run_megabytes,
        request_timeout_minutes=settings.sync_request_timeout_minutes,
        delete_after_misses=settings.sync_delete_after_misses, delete_dry_run=settings.sync_delete_dry_run)
    s3 = settings.artifacts_s3
    backups = BackupResource(
        folder=None if s3 else str(settings.artifacts_dir), bucket=s3[0] if s3 else None, prefix=s3[1] if s3 else "",
        region=settings.s3_region, endpoint_url=settings.s3_endpoint_url, sse=settings.artifacts_s3_sse,
        sse_kms_key_id=settings.artifacts_s3_kms_key_id, age_recipients=settings.backup_age_recipients,
        keep_catalog_days=settings.backup_keep_catalog_days, keep_vectors_days=settings.backup_keep_vectors_days,
        keep_config_days=settings.backup_keep_config_days, max_age_hours=settings.backup_max_age_hours)
    return {"object_store": object_store, "vector_store": vector_store, "embedder": embedder,
            "database": database, "parser": parser, "sync": sync, "backups": backups}
