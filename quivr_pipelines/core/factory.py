"""Build each external system's client from `Settings`: the embedded twin unless told otherwise."""

from __future__ import annotations

from quivr_pipelines.core.catalog.database import Database
from quivr_pipelines.core.catalog.database import open_database as _open_database
from quivr_pipelines.core.catalog.repository import KbConfig, default_kb_config
from quivr_pipelines.core.objects import LocalFolderStore, ObjectStore, S3Store
from quivr_pipelines.settings import Settings


def build_object_store(settings: Settings) -> ObjectStore:
    if settings.object_store == "s3":
        if not settings.s3_bucket:
            raise ValueError("QUIVR_OBJECT_STORE=s3 needs QUIVR_S3_BUCKET")
        return S3Store(settings.s3_bucket, settings.s3_prefix, settings.s3_region, settings.s3_endpoint_url)
    settings.inbox_dir.mkdir(parents=True, exist_ok=True)
    return LocalFolderStore(settings.inbox_dir, allow_hardlinks=settings.local_allow_hardlinks)


def build_vector_store(settings: Settings, keep_open: bool = False):
    if settings.qdrant_url:
        from quivr_pipelines.core.vectorstore.qdrant_server import QdrantServerStore

        api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return QdrantServerStore.connect(settings.qdrant_url, api_key, settings.qdrant_prefer_grpc,
                                         settings.qdrant_timeout_seconds)
    from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore

    return EmbeddedStore(settings.qdrant_dir, keep_open=keep_open)


def build_embedder(settings: Settings):
    if settings.embedder == "openai":
        from quivr_pipelines.core.embedding.openai_embedder import OpenAIEmbedder

        return OpenAIEmbedder(
            model=settings.openai_embedding_model,
            dimensions=settings.openai_embedding_dimensions,
            api_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else None,
            base_url=settings.openai_base_url,
            max_retries=settings.openai_max_retries,
        )
    from quivr_pipelines.core.embedding.local import LocalEmbedder

    return LocalEmbedder.load()


def open_database(settings: Settings) -> Database:
    return _open_database(settings)


def kb_defaults(settings: Settings) -> KbConfig:
    return default_kb_config(settings)
