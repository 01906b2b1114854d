"""Request and response bodies of the query API (the contract the load tester is written against).

Request models are strict (`strict=True`): JSON has numbers and booleans, so `"top_k": "5"`,
`"stream": "yes"` or `"temperature": "0.5"` are a client bug to report (422), not to guess at.
The one exception is datetimes, which JSON can only send as strings (ISO 8601).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from quivr_pipelines.core.vectorstore.base import (
    MAX_FUSION_DEPTH,
    MAX_FUSION_WEIGHT,
    MAX_RRF_K,
    FusionConfig,
)

MAX_TOP_K = 50  # every key
MAX_TOP_K_EVALUATION = 100  # keys with the evaluation capability (`keys create --evaluation`)


class Filters(BaseModel):
    """Payload filters inside the KB; the KB itself is always forced by the server."""

    model_config = ConfigDict(extra="forbid", strict=True)

    document_key_prefix: str | None = Field(default=None, min_length=1, max_length=1024)
    content_types: list[str] | None = Field(default=None, max_length=32)
    ingested_after: datetime | None = Field(default=None, strict=False)  # JSON sends ISO strings
    ingested_before: datetime | None = Field(default=None, strict=False)

    @field_validator("content_types")
    @classmethod
    def _types(cls, value):
        if value is not None and any(not v or len(v) > 255 for v in value):
            raise ValueError("content types must be non-empty strings of at most 255 characters")
        return value


class Fusion(BaseModel):
    """How hybrid search fuses its dense and sparse lists (core/vectorstore/base.py:FusionConfig);
    omitted fields take the default fusion's values. `depth`: candidates per list (default
    max(4 x top_k, 20))."""

    model_config = ConfigDict(extra="forbid", strict=True)

    method: Literal["rrf", "dbsf"] = FusionConfig.method
    k: int = Field(default=FusionConfig.k, ge=1, le=MAX_RRF_K)
    dense_weight: float = Field(default=1.0, ge=0, le=MAX_FUSION_WEIGHT, strict=False)  # JSON 1 is 1.0
    sparse_weight: float = Field(default=1.0, ge=0, le=MAX_FUSION_WEIGHT, strict=False)
    depth: int | None = Field(default=None, ge=1, le=MAX_FUSION_DEPTH)

    @field_validator("dense_weight", "sparse_weight", mode="before")
    @classmethod
    def _number(cls, value):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        self.config()  # dbsf with weights, both weights 0: FusionConfig's own message
        return self

    def config(self) -> FusionConfig:
        return FusionConfig(method=self.method, k=self.k, dense_weight=float(self.dense_weight),
                            sparse_weight=float(self.sparse_weight), depth=self.depth)


class SearchRequest(BaseModel):
    """`top_k` above 50 (up to 100) needs a key with the evaluation capability (403 otherwise)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    query: str = Field(min_length=1)
    top_k: int = Field(default=5, ge=1, le=MAX_TOP_K_EVALUATION,
                       description="1 to 50; up to 100 with a key created with --evaluation (403 otherwise)")
    mode: Literal["hybrid", "dense", "sparse"] = "hybrid"
    filters: Filters | None = None
    fusion: Fusion | None = None

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query is blank")
        return value

    @model_validator(mode="after")
    def _fusion_is_hybrid(self):
        if self.fusion is not None and self.mode != "hybrid":
            raise ValueError(f"fusion applies to hybrid search only, not mode {self.mode!r}")
        return self

    def fusion_config(self) -> FusionConfig | None:
        return self.fusion.config() if self.fusion is not None else None


class AskRequest(SearchRequest):
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=32_768)


class SearchResult(BaseModel):
    text: str
    score: float
    document_key: str | None
    page_number: int | None
    source_uri: str | None
    chunk_index: int | None
    content_type: str | None
    section_title: str | None


class SearchResponse(BaseModel):
    kb: str
    query: str
    mode: str
    results: list[SearchResult]
    took_ms: float
    cached: bool
    model: str | None = None  # the embedding model of the generation that answered
    generation: int | None = None  # that generation (changes at a re-embedding swap or rollback)


class Citation(BaseModel):
    n: int
    document_key: str | None
    page_number: int | None
    source_uri: str | None
    text: str
    score: float


class AskResponse(BaseModel):
    answer: str
    citations: list[Citation]
    model: str | None
    extractive: bool
    note: str | None
    usage: dict[str, Any]


class ErrorResponse(BaseModel):
    detail: Any
