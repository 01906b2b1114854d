"""`embedder`: text to vectors. The offline local model (the twin) or OpenAI-compatible."""

from __future__ import annotations

from pydantic import Field

from quivr_pipelines.core.embedding.base import Embedder
from quivr_pipelines.resources.base import ClientResource


class EmbedderResource(ClientResource):
    """Any embedder; assets take this type, deployments bind a subclass."""

    batch_size: int = Field(default=64, ge=1, le=2048, description="Texts per embedding call.")

    def get(self) -> Embedder:
        return self._get()


class LocalEmbedderResource(EmbedderResource):
    """all-MiniLM-L6-v2 (int8 ONNX, 384 dimensions) on onnxruntime, shipped in a package."""

    def _build(self) -> Embedder:
        from quivr_pipelines.core.embedding.local import LocalEmbedder

        return LocalEmbedder.load()


class OpenAIEmbedderResource(EmbedderResource):
    """OpenAI or any compatible endpoint (QUIVR_EMBEDDER=openai, QUIVR_OPENAI_*)."""

    model: str = "text-embedding-3-small"
    dimensions: int | None = None
    base_url: str | None = None
    api_key: str | None = Field(default=None, description="From QUIVR_OPENAI_API_KEY or OPENAI_API_KEY; never shown.")
    max_retries: int = 6

    def _build(self) -> Embedder:
        from quivr_pipelines.core.embedding.openai_embedder import OpenAIEmbedder

        return OpenAIEmbedder(model=self.model, dimensions=self.dimensions, api_key=self.api_key,
                              base_url=self.base_url, max_retries=self.max_retries)
