"""Request and response bodies of the query API (the contract the load tester is written against).

Request models are strict (`strict=True`): JSON has numbers and booleans, so `"top_k": "5"`,
`"stream": "yes"` or `"temperature": "0.5"` are a client bug to report (422), not to guess at.
The one exception is datetimes, which JSON can only send as strings (ISO 8601).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    query: str = Field(min_length=1)
    top_k: int = Field(default=5, ge=1, le=50)
    mode: Literal["hybrid", "dense", "sparse"] = "hybrid"
    filters: Filters | None = None

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query is blank")
        return value


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
