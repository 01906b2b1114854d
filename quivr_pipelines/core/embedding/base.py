"""The embedder interface: texts in, L2-normalised float32 vectors and a token count out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class EmbeddingBatch:
    vectors: np.ndarray  # (n, dimensions), float32, unit length
    tokens: int


class Embedder(Protocol):
    provider: str
    model: str

    @property
    def dimensions(self) -> int: ...

    @property
    def fingerprint(self) -> str:
        """`provider:model:dimensions`: stored on the collection and in the embedding cache key."""

    def count_tokens(self, texts: list[str]) -> list[int]: ...

    def embed(self, texts: list[str]) -> EmbeddingBatch: ...
