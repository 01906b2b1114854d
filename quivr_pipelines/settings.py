"""Every setting comes from the environment (or a `.env` file), read at run time, never at import.

The defaults are the embedded stack: a local folder, an embedded Qdrant engine, an offline
embedding model and an embedded PostgreSQL, all under `QUIVR_DATA_DIR`. Production is one
variable away for each system (see the README's configuration table).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="QUIVR_", env_file=".env", extra="ignore", populate_by_name=True
    )

    data_dir: Path = Path(".quivr")

    # Object storage: a local folder by default, S3 (or MinIO/R2) in production.
    object_store: Literal["local", "s3"] = "local"
    local_root: Path | None = None
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_region: str | None = None
    s3_endpoint_url: str | None = None

    # Vector store: embedded engine on disk by default, a Qdrant server when a URL is set.
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    qdrant_prefer_grpc: bool = False
    qdrant_timeout_seconds: float = 30.0

    # Embeddings: an offline model by default, OpenAI (or a compatible endpoint) in production.
    embedder: Literal["local", "openai"] = "local"
    openai_embedding_model: str = "text-embedding-3-small"
    openai_embedding_dimensions: int | None = None
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("QUIVR_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_max_retries: int = 6
    embedding_batch_size: int = Field(default=64, ge=1, le=2048)

    # Catalog: embedded PostgreSQL by default, any PostgreSQL DSN in production.
    database_url: SecretStr | None = None
    database_pool_size: int = Field(default=5, ge=1, le=100)
    database_schema: str = "quivr"

    # Ingestion limits and chunking defaults (a KB may override the chunk sizes).
    max_upload_size_mb: float = Field(
        default=25, gt=0, validation_alias=AliasChoices("QUIVR_MAX_UPLOAD_SIZE_MB", "MAX_UPLOAD_SIZE_MB")
    )
    chunk_max_characters: int = Field(default=1500, ge=100)
    chunk_new_after_characters: int = Field(default=1200, ge=50)
    chunk_combine_under_characters: int = Field(default=200, ge=0)
    chunk_overlap_characters: int = Field(default=0, ge=0)
    documents_per_run: int = Field(default=100, ge=1)
    parse_workers: int | None = Field(default=None, ge=1)  # None: one per core

    # Object-store sync (object_store_sensor).
    sync_delete_after_misses: int = Field(default=2, ge=1)
    sync_delete_dry_run: bool = False
    sync_objects_per_tick: int = Field(default=50_000, ge=1)
    sync_max_run_megabytes: int = Field(default=256, ge=1)
    sync_request_timeout_minutes: int = Field(default=60, ge=1)

    # Query service (`quivr-pipelines serve`): answer generation, request limits, caches.
    # No QUIVR_LLM_MODEL: /ask answers extractively (the best passages, with citations).
    llm_model: str | None = None
    llm_base_url: str | None = None  # OpenAI-compatible endpoint; unset: OpenAI
    llm_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("QUIVR_LLM_API_KEY", "OPENAI_API_KEY")
    )
    llm_temperature: float = Field(default=0.1, ge=0, le=2)
    llm_max_tokens: int = Field(default=512, ge=1, le=32_768)
    llm_max_retries: int = Field(default=2, ge=0, le=10)
    llm_timeout_seconds: float = Field(default=60.0, gt=0)
    llm_price_prompt_per_million: float = Field(default=0.0, ge=0)  # dollars per 1M prompt tokens
    llm_price_completion_per_million: float = Field(default=0.0, ge=0)
    max_query_length: int = Field(
        default=1000, ge=1, validation_alias=AliasChoices("QUIVR_MAX_QUERY_LENGTH", "MAX_QUERY_LENGTH")
    )
    service_max_body_bytes: int = Field(default=65_536, ge=1024)
    service_cors_origins: str = ""  # comma-separated origins allowed by CORS; empty: none
    service_workers: int = Field(default=1, ge=1, le=64)  # forced to 1 on the embedded store
    rate_limit_per_minute: float = Field(default=120, ge=0)  # per API key; 0: no limit
    rate_limit_burst: int = Field(default=30, ge=1)
    query_cache_size: int = Field(default=2048, ge=0)  # result cache entries; 0: off
    query_cache_ttl_seconds: float = Field(default=300, gt=0)
    query_embedding_cache_size: int = Field(default=8192, ge=0)  # query vectors; 0: off
    query_embedding_cache_ttl_seconds: float = Field(default=3600, gt=0)
    audit_flush_seconds: float = Field(default=1.0, gt=0)  # audit/usage rows are written in batches

    @property
    def inbox_dir(self) -> Path:
        return (self.local_root or self.data_dir / "inbox").resolve()

    @property
    def qdrant_dir(self) -> Path:
        return (self.data_dir / "qdrant").resolve()

    @property
    def postgres_dir(self) -> Path:
        return (self.data_dir / "postgres").resolve()

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_size_mb * 1024 * 1024)


def get_settings() -> Settings:
    """Read the environment now (cheap); callers keep the result for the length of their work."""
    return Settings()
