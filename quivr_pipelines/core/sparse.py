"""BM25-style sparse vectors computed locally, stored beside the dense vector.

The document side carries BM25's saturated term frequency; Qdrant's IDF modifier supplies the
inverse document frequency at query time, so the collection never needs re-weighting as it grows.
Term ids are a stable hash of the lower-cased token (no vocabulary to ship or keep in sync).
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from dataclasses import dataclass

TOKEN_PATTERN = re.compile(r"\w+", re.UNICODE)
K1 = 1.2
B = 0.75
AVERAGE_DOCUMENT_TOKENS = 200.0
STOP_WORDS = frozenset(
    "a an and are as at be but by for from has have he her his i if in into is it its of on or "
    "our she so than that the their them then there these they this to was we were what when "
    "which who will with you your".split()
)


@dataclass(frozen=True)
class SparseVector:
    indices: list[int]
    values: list[float]


def tokens(text: str) -> list[str]:
    return [
        token
        for token in TOKEN_PATTERN.findall(text.lower())
        if token not in STOP_WORDS and (len(token) > 1 or not token.isascii())
    ]


def term_id(token: str) -> int:
    return zlib.crc32(token.encode("utf-8")) & 0x7FFFFFFF


def _to_vector(weights: dict[int, float]) -> SparseVector:
    indices = sorted(weights)
    return SparseVector(indices=indices, values=[float(weights[i]) for i in indices])


def document_vector(text: str) -> SparseVector:
    counts = Counter(term_id(token) for token in tokens(text))
    length = sum(counts.values())
    norm = K1 * (1 - B + B * length / AVERAGE_DOCUMENT_TOKENS)
    return _to_vector({tid: tf * (K1 + 1) / (tf + norm) for tid, tf in counts.items()})


def query_vector(text: str) -> SparseVector:
    return _to_vector({term_id(token): 1.0 for token in tokens(text)})
