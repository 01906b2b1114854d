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


class _SettingsResource(dg.ConfigurableResource):
    _settings: Settings | None = PrivateAttr(default=None)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = get_settings()
        return self._settings


class ObjectStoreResource(_SettingsResource):
    """A local folder (QUIVR_LOCAL_ROOT) or S3 (QUIVR_OBJECT_STORE=s3, QUIVR_S3_*)."""

    _store: object = PrivateAttr(default=None)

    def get(self):
        if self._store is None:
            self._store = build_object_store(self.settings)
        return self._store


class VectorStoreResource(_SettingsResource):
    """The embedded engine under QUIVR_DATA_DIR, or a Qdrant server (QUIVR_QDRANT_URL)."""

    _store: object = PrivateAttr(default=None)

    def get(self):
        if self._store is None:
            self._store = build_vector_store(self.settings)
        return self._store

    def teardown_after_execution(self, context) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


class EmbedderResource(_SettingsResource):
    """The offline local model, or OpenAI-compatible embeddings (QUIVR_EMBEDDER=openai)."""

    _embedder: object = PrivateAttr(default=None)

    def get(self):
        if self._embedder is None:
            self._embedder = build_embedder(self.settings)
        return self._embedder


class DatabaseResource(_SettingsResource):
    """The catalog: embedded PostgreSQL, or QUIVR_DATABASE_URL."""

    _db: object = PrivateAttr(default=None)

    def get(self):
        if self._db is None:
            self._db = open_database(self.settings)
        return self._db

    def teardown_after_execution(self, context) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def default_resources() -> dict:
    return {
        "object_store": ObjectStoreResource(),
        "vector_store": VectorStoreResource(),
        "embedder": EmbedderResource(),
        "database": DatabaseResource(),
    }
