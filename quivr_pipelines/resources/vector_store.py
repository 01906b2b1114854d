"""`vector_store`: the KB collections. The embedded engine (the twin) or a Qdrant server."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from quivr_pipelines.core.vectorstore.base import VectorStore
from quivr_pipelines.resources.base import ClientResource


class VectorStoreResource(ClientResource):
    """Any vector store; assets take this type, deployments bind a subclass."""

    def get(self) -> VectorStore:
        return self._get()


class EmbeddedVectorStoreResource(VectorStoreResource):
    """qdrant-edge shards under `path` ($QUIVR_DATA_DIR/qdrant). A run keeps the store open from
    batch to batch (opening a shard costs ~0.2 s) and hands it over as soon as another process
    queues for it."""

    path: str
    keep_open: bool = Field(default=True, description="Hold the store between batches (handed over on demand).")

    def _build(self) -> VectorStore:
        from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore

        return EmbeddedStore(Path(self.path), keep_open=self.keep_open)


class QdrantServerResource(VectorStoreResource):
    """A Qdrant server or cluster (QUIVR_QDRANT_URL, QUIVR_QDRANT_API_KEY)."""

    url: str
    api_key: str | None = Field(default=None, description="From QUIVR_QDRANT_API_KEY; never shown.")
    prefer_grpc: bool = False
    timeout_seconds: float = 30.0

    def _build(self) -> VectorStore:
        from quivr_pipelines.core.vectorstore.qdrant_server import QdrantServerStore

        return QdrantServerStore.connect(self.url, self.api_key, self.prefer_grpc, self.timeout_seconds)
