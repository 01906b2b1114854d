"""Every setting comes from the environment (or a `.env` file), read at run time, never at import.

The defaults are the embedded stack: a local folder, an embedded Qdrant engine, an offline
embedding model and an embedded PostgreSQL, all under `QUIVR_DATA_DIR`. Production is one
variable away for each system (see the README's configuration table).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from quivr_pipelines.core.keys import raw_key_problem
from quivr_pipelines.core.parsing.guards import ParseLimits

# Asymmetric JWS algorithms only: `none` is no signature and HS* with a public key as the secret
# is the classic key-confusion forgery.
OIDC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
ROLES = ("viewer", "editor", "admin")  # as core/catalog/api_keys.ROLES


def _oidc_algorithms(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(a.strip() for a in text.split(",") if a.strip()))
    refused = [a for a in names if a not in OIDC_ALGORITHMS]
    if refused or not names:
        raise ValueError(f"QUIVR_OIDC_ALGORITHMS: {', '.join(refused) or 'empty'} refused; "
                         f"allowed: {', '.join(OIDC_ALGORITHMS)}")
    return names


def _oidc_role_map(text: str) -> tuple[tuple[str, str], ...]:
    """`claim-value=role,...`; `*=role` gives every valid token that role (at least)."""
    rules = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        value, sep, role = (part.strip() for part in item.rpartition("="))
        if not sep or not value or role not in ROLES:
            raise ValueError(f"QUIVR_OIDC_ROLE_MAP: {item!r} is not `claim-value=role` with a role of "
                             f"{', '.join(ROLES)}")
        rules.append((value, role))
    return tuple(rules)


def oidc_fetch_url_problem(url: str) -> str | None:
    """Keys fetched over plain HTTP could be swapped on the way: HTTPS, or HTTP on loopback only."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"):
        return None
    return f"{url!r} is not an https:// URL (plain http is allowed on loopback only)"


def _prefixes_overlap(a: str, b: str) -> bool:
    """Whether one '/'-separated prefix holds the other ('' holds everything)."""
    return not a or not b or a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _artifacts_problem(settings: Settings) -> str | None:
    """Artifacts never share a folder or a bucket prefix with the documents: a backup there would
    be listed as a knowledge base and ingested (and a prefix delete could reach the documents)."""
    uri = settings.artifacts_uri or ""
    if "://" in uri and not uri.startswith("s3://"):
        return f"QUIVR_ARTIFACTS_URI: {uri!r} is neither an s3://bucket/prefix URI nor a folder"
    s3 = settings.artifacts_s3
    if settings.artifacts_s3_kms_key_id and not (settings.artifacts_s3_sse or "").startswith("aws:kms"):
        return "QUIVR_ARTIFACTS_S3_KMS_KEY_ID needs QUIVR_ARTIFACTS_S3_SSE=aws:kms (or aws:kms:dsse)"
    if s3 is None:
        if settings.artifacts_s3_sse:
            return "QUIVR_ARTIFACTS_S3_SSE applies to s3:// artifacts only; QUIVR_ARTIFACTS_URI is a folder"
        folder, inbox = settings.artifacts_dir, settings.inbox_dir
        assert folder is not None
        if folder.is_relative_to(inbox) or inbox.is_relative_to(folder):
            return (f"QUIVR_ARTIFACTS_URI: {folder} overlaps the documents inbox {inbox} (every folder "
                    "there becomes a knowledge base): choose a folder outside it")
        return None
    bucket, prefix = s3
    if not bucket:
        return f"QUIVR_ARTIFACTS_URI: {uri!r} names no bucket (s3://bucket/prefix)"
    if prefix and raw_key_problem(prefix):
        return f"QUIVR_ARTIFACTS_URI: prefix {prefix!r}: {raw_key_problem(prefix)}"
    if settings.object_store == "s3" and bucket == settings.s3_bucket:
        documents = settings.s3_prefix.strip("/")
        if _prefixes_overlap(prefix, documents):
            where = f"s3://{bucket}/{documents + '/' if documents else ''}"
            return (f"QUIVR_ARTIFACTS_URI: {uri!r} overlaps the documents at {where} (every top-level "
                    "folder there becomes a knowledge base): use another bucket, or prefixes apart, "
                    "e.g. QUIVR_S3_PREFIX=documents and s3://BUCKET/artifacts")
    return None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="QUIVR_", env_file=".env", extra="ignore", populate_by_name=True
    )

    data_dir: Path = Path(".quivr")

    # Object storage: a local folder by default, S3 (or MinIO/R2) in production.
    object_store: Literal["local", "s3"] = "local"
    local_root: Path | None = None
    local_allow_hardlinks: bool = False  # read files with st_nlink > 1 (their other names may be outside)
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_region: str | None = None
    s3_endpoint_url: str | None = None

    # Artifacts (backups, reports; core/artifacts.py): `s3://bucket/prefix` (the S3 endpoint, region
    # and credentials above) or a folder; unset: <QUIVR_DATA_DIR>/artifacts. Never inside the
    # documents (every top-level folder there becomes a KB): an overlapping location is refused.
    artifacts_uri: str | None = None
    artifacts_s3_sse: Literal["AES256", "aws:kms", "aws:kms:dsse"] | None = None  # sent with every write
    artifacts_s3_kms_key_id: str | None = None  # with aws:kms; unset: the bucket's AWS-managed key

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
    # More embedders the query service and `search` may use for a KB whose collection another model
    # embedded (a re-embedding moved its alias): comma-separated `local`, `openai:MODEL[:DIMS][@BASE_URL]`
    # (core/embedding/registry.py). The default above and the local model are always configured.
    embedders: str = ""
    embedding_batch_size: int = Field(default=64, ge=1, le=2048)

    # Catalog: embedded PostgreSQL by default, any PostgreSQL DSN in production.
    database_url: SecretStr | None = None
    database_pool_size: int = Field(default=5, ge=1, le=100)
    database_schema: str = "quivr"
    database_pool_timeout_seconds: float = Field(default=3.0, gt=0)  # wait for a connection, then 503
    database_connect_timeout_seconds: float = Field(default=5.0, gt=0)  # one connection attempt

    # Ingestion limits and chunking defaults (a KB may override the chunk sizes).
    max_upload_size_mb: float = Field(
        default=25, gt=0, validation_alias=AliasChoices("QUIVR_MAX_UPLOAD_SIZE_MB", "MAX_UPLOAD_SIZE_MB")
    )
    chunk_max_characters: int = Field(default=1500, ge=100)
    chunk_new_after_characters: int = Field(default=1200, ge=50)
    chunk_combine_under_characters: int = Field(default=200, ge=0)
    chunk_overlap_characters: int = Field(default=0, ge=0)
    # Embed and index each chunk with its header (document title, section; core/chunking.py);
    # false: the plain chunk text, to measure retrieval without them. Re-ingest with --force after a change.
    chunk_context_headers: bool = True
    # PII handling a new KB starts with (`kb set --pii` changes a KB's): off, detect, mask.
    pii: Literal["off", "detect", "mask"] = "off"
    documents_per_run: int = Field(default=100, ge=1)
    parse_workers: int | None = Field(default=None, ge=1)  # None: one per core
    # Each document's parse limits (README, "Bounded parsing"); defaults measured, in core/parsing/guards.py.
    parse_timeout_seconds: float = Field(default=ParseLimits.timeout_seconds, gt=0)  # then parse_timeout
    parse_memory_mb: int = Field(default=ParseLimits.memory_mb, ge=1024)  # a worker's address space (~0.7 GB of it libraries); then too_complex
    parse_max_uncompressed_mb: float = Field(default=ParseLimits.max_uncompressed_mb, gt=0)  # ZIP packages
    parse_max_compression_ratio: float = Field(default=ParseLimits.max_compression_ratio, gt=1)
    parse_max_archive_members: int = Field(default=ParseLimits.max_archive_members, ge=1)
    parse_max_cells: int = Field(default=ParseLimits.max_cells, ge=1)  # XLSX dimensions, CSV/TSV cells
    parse_max_line_characters: int = Field(default=ParseLimits.max_line_characters, ge=1)  # text-like files

    # Re-embedding (`reembed`, reembed_job): how long a replaced generation can be rolled back to
    # before generation_cleanup_schedule drops it, the quality gate's allowed drop, and the price
    # a dry run costs the target model's tokens at (dollars per 1M tokens; unset: no dollars).
    reembed_rollback_hours: float = Field(default=168, ge=0)
    reembed_quality_margin: float = Field(default=0.02, ge=0, le=1)
    embedding_price_per_million: float | None = Field(default=None, ge=0)
    reembed_page_size: int = Field(default=256, ge=1, le=4096)  # points embedded per round (and per cursor step)

    # Backups (`backup`, `backups`, `restore`): age recipients (public keys) that backup files are
    # encrypted to (unset: not encrypted), the private key(s) a restore decrypts with, and how many
    # days each component is kept (the newest complete set is always kept).
    backup_age_recipients: str | None = None
    backup_age_identity: SecretStr | None = None
    backup_age_identity_file: Path | None = None
    backup_keep_catalog_days: float = Field(default=30, gt=0)
    backup_keep_vectors_days: float = Field(default=14, gt=0)
    backup_keep_config_days: float = Field(default=90, gt=0)
    backup_cron: str = "0 2 * * *"  # backup_schedule (the Dagster daemon's time zone, UTC by default)
    backup_max_age_hours: float = Field(default=26, gt=0)  # check_backup_recent fails past this

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
    # Requests without a usable key, per client address and process (service/ratelimit.py).
    anon_rate_limit_per_minute: float = Field(default=60, ge=0)  # 0: no limit
    anon_rate_limit_burst: int = Field(default=30, ge=1)
    anon_rate_limit_clients: int = Field(default=10_000, ge=1)  # addresses tracked (LRU, bounded memory)
    service_expose_source_uri: bool = False  # false: clients see the KB-relative key, not server paths
    query_cache_size: int = Field(default=2048, ge=0)  # result cache entries; 0: off
    query_cache_ttl_seconds: float = Field(default=300, gt=0)
    query_embedding_cache_size: int = Field(default=8192, ge=0)  # query vectors; 0: off
    query_embedding_cache_ttl_seconds: float = Field(default=3600, gt=0)
    audit_flush_seconds: float = Field(default=1.0, gt=0)  # audit/usage rows are written in batches
    service_tls_cert: Path | None = None  # PEM certificate (chain): serve HTTPS itself, TLS 1.2+
    service_tls_key: Path | None = None  # its PEM private key
    service_header_timeout_seconds: float = Field(default=10.0, gt=0)  # a request's headers must arrive in this
    service_keep_alive_seconds: float = Field(default=5.0, gt=0)  # idle keep-alive connections are closed after

    # OAuth2 users: JWT bearer tokens of one OIDC issuer (service/oidc.py); unset issuer: API keys only.
    oidc_issuer: str | None = None  # must equal the tokens' `iss` exactly
    oidc_audience: str | None = None  # required with an issuer; comma-separated: any of them
    oidc_jwks_url: str | None = None  # unset: jwks_uri of {issuer}/.well-known/openid-configuration
    oidc_algorithms: str = "RS256,ES256"  # asymmetric only: never `none`, never HS*
    oidc_role_claim: str = "roles"  # claim name or dotted path, e.g. realm_access.roles
    oidc_role_map: str = "quivr-admin=admin,quivr-editor=editor,quivr-viewer=viewer"  # `*=viewer`: fallback
    oidc_kbs_claim: str = "quivr_kbs"  # claim listing the KBs a user may read (`*`: every KB)
    oidc_kbs_prefix: str = ""  # only values with this prefix name KBs (the prefix is removed)
    oidc_leeway_seconds: float = Field(default=30, ge=0, le=600)  # clock skew allowed on exp/nbf/iat
    oidc_jwks_ttl_seconds: float = Field(default=600, gt=0)  # keys are refetched after this
    oidc_jwks_min_refresh_seconds: float = Field(default=30, ge=0)  # at most one fetch per this (unknown kid)
    oidc_jwks_timeout_seconds: float = Field(default=5, gt=0, le=60)  # one JWKS/discovery fetch, in total

    @property
    def inbox_dir(self) -> Path:
        return (self.local_root or self.data_dir / "inbox").resolve()

    @property
    def artifacts_s3(self) -> tuple[str, str] | None:
        """(bucket, prefix) when QUIVR_ARTIFACTS_URI is an s3:// URI, else None."""
        uri = self.artifacts_uri or ""
        if not uri.startswith("s3://"):
            return None
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        return bucket, prefix.strip("/")

    @property
    def artifacts_dir(self) -> Path | None:
        """The artifacts folder, or None when they go to S3."""
        if self.artifacts_s3 is not None:
            return None
        if not self.artifacts_uri:
            return (self.data_dir / "artifacts").resolve()
        return Path(self.artifacts_uri).expanduser().resolve()

    @property
    def qdrant_dir(self) -> Path:
        return (self.data_dir / "qdrant").resolve()

    @property
    def postgres_dir(self) -> Path:
        return (self.data_dir / "postgres").resolve()

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_size_mb * 1024 * 1024)

    @property
    def oidc_algorithm_list(self) -> tuple[str, ...]:
        return _oidc_algorithms(self.oidc_algorithms)

    @property
    def oidc_role_rules(self) -> tuple[tuple[str, str], ...]:
        return _oidc_role_map(self.oidc_role_map)

    @field_validator("oidc_algorithms")
    @classmethod
    def _check_oidc_algorithms(cls, value: str) -> str:
        _oidc_algorithms(value)
        return value

    @field_validator("embedders")
    @classmethod
    def _check_embedders(cls, value: str) -> str:
        from quivr_pipelines.core.embedding.registry import parse_specs

        try:
            parse_specs(value)
        except ValueError as exc:
            raise ValueError(f"QUIVR_EMBEDDERS: {exc}") from None
        return value

    @field_validator("oidc_role_map")
    @classmethod
    def _check_oidc_role_map(cls, value: str) -> str:
        _oidc_role_map(value)
        return value

    @model_validator(mode="after")
    def _check_artifacts(self) -> Settings:
        problem = _artifacts_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _check_oidc(self) -> Settings:
        if self.oidc_issuer and not (self.oidc_audience or "").strip(","):
            raise ValueError("QUIVR_OIDC_ISSUER needs QUIVR_OIDC_AUDIENCE (tokens of any client would pass)")
        if self.oidc_issuer:
            url = self.oidc_jwks_url or self.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration"
            problem = oidc_fetch_url_problem(url)
            if problem:
                raise ValueError(f"QUIVR_OIDC_JWKS_URL / QUIVR_OIDC_ISSUER: {problem}")
        return self


def get_settings() -> Settings:
    """Read the environment now (cheap); callers keep the result for the length of their work.
    Its secrets are registered for redaction from every log line and error (core/redaction.py)."""
    from quivr_pipelines.core.redaction import protect

    settings = Settings()
    protect(settings)
    return settings
