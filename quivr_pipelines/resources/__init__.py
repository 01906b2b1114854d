"""Dagster resources: thin wrappers that build the plain-Python clients at run time.

Each resource reads `Settings` (pydantic-settings: environment variables and `.env`) when a run
starts, never at import, so secrets stay in the environment and the code location loads with no
configuration at all. The embedded twin is what a resource builds when its production variable
(QUIVR_OBJECT_STORE=s3, QUIVR_QDRANT_URL, QUIVR_EMBEDDER=openai, QUIVR_DATABASE_URL) is unset.
"""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from quivr_pipelines.core.factory import (
    build_embedder, build_object_store, build_vector_store, open_database,
)
from quivr_pipelines.settings import Settings, get_settings


class _ClientResource(dg.ConfigurableResource):
    """Builds its client from `Settings` on first use in a run and closes it at the end."""

    _settings: Settings | None = PrivateAttr(default=None)
    _client: object = PrivateAttr(default=None)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = get_settings()
        return self._settings

    def _build(self, settings: Settings):
        raise NotImplementedError

    def get(self):
        if self._client is None:
            self._client = self._build(self.settings)
        return self._client

    def teardown_after_execution(self, context) -> None:
        close = getattr(self._client, "close", None)
        if close is not None:
            close()
        self._client = None


class ObjectStoreResource(_ClientResource):
    """A local folder (QUIVR_LOCAL_ROOT) or S3 (QUIVR_OBJECT_STORE=s3, QUIVR_S3_*)."""

    def _build(self, settings):
        return build_object_store(settings)


class VectorStoreResource(_ClientResource):
    """The embedded engine under QUIVR_DATA_DIR, or a Qdrant server (QUIVR_QDRANT_URL)."""

    def _build(self, settings):
        # Embedded engine: a run keeps the store open from batch to batch (opening and closing a
        # shard costs ~0.2 s) and hands it over as soon as another process queues for it.
        return build_vector_store(settings, keep_open=True)


class EmbedderResource(_ClientResource):
    """The offline local model, or OpenAI-compatible embeddings (QUIVR_EMBEDDER=openai)."""

    def _build(self, settings):
        return build_embedder(settings)


class DatabaseResource(_ClientResource):
    """The catalog: embedded PostgreSQL, or QUIVR_DATABASE_URL."""

    def _build(self, settings):
        return open_database(settings)


def default_resources() -> dict:
    return {
        "object_store": ObjectStoreResource(),
        "vector_store": VectorStoreResource(),
        "embedder": EmbedderResource(),
        "database": DatabaseResource(),
    }
