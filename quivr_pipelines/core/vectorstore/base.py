"""The vector store interface shared by the pipelines and the query service.

Two implementations speak it: `QdrantServerStore` (qdrant-client against a Qdrant server; its
local mode in tests) and `EmbeddedStore` (Qdrant's own engine in-process, qdrant-edge).
Collections hold one named dense vector ("dense", cosine) and one sparse vector ("sparse",
IDF modifier). A KB is read through an alias named after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from quivr_pipelines.core.sparse import SparseVector

DENSE = "dense"
SPARSE = "sparse"
SearchMode = Literal["hybrid", "dense", "sparse"]
# Payload fields with an index: filters on them stay fast at 100k+ points.
KEYWORD_FIELDS = ("kb", "document_key", "content_type", "version")
INTEGER_FIELDS = ("chunk_index",)
DATETIME_FIELDS = ("ingested_at",)


@dataclass(frozen=True)
class PointRecord:
    id: str
    dense: list[float]
    sparse: SparseVector
    payload: dict[str, Any]


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    points: int
    dimensions: int
    fingerprint: str | None


@dataclass(frozen=True)
class SearchFilter:
    kb: str | None = None
    document_key_prefix: str | None = None
    content_types: tuple[str, ...] = ()
    ingested_after: str | None = None
    ingested_before: str | None = None


MAX_RRF_K = 10_000
MAX_FUSION_WEIGHT = 100.0
MAX_FUSION_DEPTH = 1_000  # candidates per list; the default for top_k 100 is 400


@dataclass(frozen=True)
class FusionConfig:
    """How hybrid search fuses its dense and sparse candidate lists inside Qdrant.

    `rrf`: reciprocal rank fusion, 1/(k + rank), optionally weighted per list. `dbsf`:
    distribution-based score fusion (each list's scores normalised by mean +- 3 sigma, summed;
    no weights). `depth`: candidates per list (default max(4 x limit, 20)).

    The defaults are DEFAULT_FUSION. k=20 replaced k=60 on 2026-12-02: better on both shared sets
    (XQuAD-en nDCG@10 +0.001, p = 0.017; NFCorpus +0.003, p = 0.007; paired randomisation test,
    `quivr-pipelines eval --fusion rrf:k=60`); every variant measured is in benchmarks/RESULTS.md.
    """

    method: Literal["rrf", "dbsf"] = "rrf"
    k: int = 20
    dense_weight: float = 1.0
    sparse_weight: float = 1.0
    depth: int | None = None

    def __post_init__(self):
        """Bounds: k >= 1 (k = 0 would divide by a zero rank), finite weights >= 0 and not both 0
        (that ranks every point equal), 1 <= depth <= MAX_FUSION_DEPTH (each list is read whole)."""
        if self.method not in ("rrf", "dbsf"):
            raise ValueError(f"unknown fusion {self.method!r} (expected rrf or dbsf)")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= MAX_RRF_K:
            raise ValueError(f"rrf k must be an integer from 1 to {MAX_RRF_K}, not {self.k!r}")
        for name in ("dense_weight", "sparse_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    math.isfinite(value) and 0 <= value <= MAX_FUSION_WEIGHT):
                raise ValueError(f"{name} must be a number from 0 to {MAX_FUSION_WEIGHT:g}, not {value!r}")
        if self.dense_weight == 0 and self.sparse_weight == 0:
            raise ValueError("dense_weight and sparse_weight cannot both be 0")
        if self.depth is not None and (isinstance(self.depth, bool) or not isinstance(self.depth, int)
                                       or not 1 <= self.depth <= MAX_FUSION_DEPTH):
            raise ValueError(f"depth must be an integer from 1 to {MAX_FUSION_DEPTH}, not {self.depth!r}")
        if self.method == "dbsf" and self.weights() is not None:
            raise ValueError("dbsf fusion takes no weights")

    def weights(self) -> list[float] | None:
        if self.dense_weight == 1.0 and self.sparse_weight == 1.0:
            return None
        return [self.dense_weight, self.sparse_weight]

    def prefetch_depth(self, limit: int) -> int:
        return self.depth if self.depth else max(limit * 4, 20)

    def label(self) -> str:
        parts = [f"k={self.k}"] if self.method == "rrf" else []
        if self.weights():
            parts.append(f"dense={self.dense_weight:g},sparse={self.sparse_weight:g}")
        if self.depth:
            parts.append(f"depth={self.depth}")
        return self.method + (":" + ",".join(parts) if parts else "")


DEFAULT_FUSION = FusionConfig()


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


TIE_MARGIN = 10


def settle_ties(hits: list[Hit], limit: int) -> list[Hit]:
    """Equal fused scores are common with RRF (ranks 1+2 vs 2+1) and Qdrant returns them in no
    fixed order; ordering them by point id makes a query give the same list every time. The
    stores fetch `limit + TIE_MARGIN` so that a tie across the cut is settled here too."""
    return sorted(hits, key=lambda h: (-h.score, h.id))[:limit]


class VectorStore(Protocol):
    def ensure_collection(self, name: str, dimensions: int, fingerprint: str) -> None: ...

    def collection_info(self, name: str, exact: bool = True) -> CollectionInfo | None:
        """`exact=False`: an approximate point count, ~0.04 ms instead of ~10 ms at 100k points."""

    def list_collections(self) -> list[str]: ...

    def resolve_alias(self, alias: str) -> str | None: ...

    def set_alias(self, alias: str, collection: str) -> None: ...

    def replace_document(self, collection: str, kb: str, document_key: str,
                         points: list[PointRecord]) -> None:
        """Upsert the document's points, then drop its chunks beyond the new count."""

    def replace_documents(self, collection: str, items: list[tuple[str, str, list[PointRecord]]]) -> None:
        """`replace_document` for many documents in one write session."""

    def optimize(self, collection: str) -> bool: ...

    def delete_document(self, collection: str, kb: str, document_key: str) -> None: ...

    def delete_documents(self, collection: str, kb: str, document_keys: list[str]) -> None: ...

    def chunk_counts(self, collection: str, kb: str) -> dict[str, int]:
        """document key -> number of points of that document in the KB."""

    def document_points(self, collection: str, kb: str, document_key: str) -> list[Hit]: ...

    def count(self, collection: str, kb: str | None = None, document_key: str | None = None) -> int: ...

    def search(self, collection: str, dense: list[float] | None, sparse: SparseVector | None,
               limit: int, flt: SearchFilter | None = None, mode: SearchMode = "hybrid",
               fusion: FusionConfig | None = None) -> list[Hit]: ...

    # -- generations (re-embedding, core/reembed.py) -------------------------------------------
    def upsert_points(self, collection: str, points: list[PointRecord]) -> None:
        """Write points as they are (same id: replaced); no per-document cleanup."""

    def scroll_points(self, collection: str, kb: str | None, offset: str | None,
                      limit: int) -> tuple[list[Hit], str | None]:
        """A page of points (payload, no vectors) in point-id order from `offset` (None: the
        start); returns the page and the next offset (None: the end). A durable cursor."""

    def delete_collection(self, name: str) -> bool:
        """Drop a collection no alias points to; False when it did not exist."""

    def close(self) -> None: ...

    def payload_indexes(self, collection: str) -> dict[str, str]:
        """field -> index type ("keyword", "integer", "datetime"...) as the engine reports it
        (the re-embedding gate checks a new collection has every index of `ensure_collection`)."""

    def sample_points(self, collection: str, limit: int, kb: str | None = None) -> list[Hit]:
        """Up to `limit` points (payload only) in point-id order; ids are uuid5, so these are
        spread over the documents like a random sample, and the same ones every time."""
