"""Embed many documents' chunks: cache first, then batches, then one document at a time on failure.

A chunk text already embedded by the same model (same fingerprint, same sha256 of the text) is
read from the catalog's embedding cache. The rest go out in batches across documents; if a batch
fails after the client's own retries, each of its documents is retried alone so that one bad
document never sinks the others. Every call that reached the model writes a usage ledger row.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from quivr_pipelines.core import redaction
from quivr_pipelines.core.catalog import repository
from quivr_pipelines.core.catalog.database import Database
from quivr_pipelines.core.embedding.base import Embedder

log = logging.getLogger(__name__)


def text_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


@dataclass
class EmbeddingOutcome:
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # document id -> (n, d)
    failures: dict[str, str] = field(default_factory=dict)  # document id -> reason
    tokens: dict[str, int] = field(default_factory=dict)  # document id -> tokens embedded or cached
    embedded_texts: int = 0
    cached_texts: int = 0
    seconds: float = 0.0


def embed_documents(
    embedder: Embedder,
    db: Database,
    documents: Sequence[tuple[str, Sequence[str]]],
    *,
    kb: str | None,
    batch_size: int,
    run_id: str | None = None,
) -> EmbeddingOutcome:
    started = time.perf_counter()
    outcome = EmbeddingOutcome()
    digests = {doc_id: [text_digest(t) for t in texts] for doc_id, texts in documents}
    texts_by_digest = {d: t for doc_id, texts in documents for d, t in zip(digests[doc_id], texts)}
    known = repository.cached_embeddings(db, embedder.fingerprint, list(texts_by_digest))
    outcome.cached_texts = len(known)
    missing = [d for d in texts_by_digest if d not in known]

    for start in range(0, len(missing), batch_size):
        batch = missing[start:start + batch_size]
        try:
            _embed_into(embedder, db, batch, texts_by_digest, known, kb, run_id, outcome)
        except Exception as exc:  # noqa: BLE001 - isolate below, per document
            log.warning("embedding batch of %d texts failed (%s); retrying per document", len(batch),
                        redaction.summary(exc))

    for doc_id, doc_digests in digests.items():
        pending = [d for d in dict.fromkeys(doc_digests) if d not in known]
        if pending:  # only texts of a failed batch can still be pending here
            try:
                for start in range(0, len(pending), batch_size):
                    _embed_into(embedder, db, pending[start:start + batch_size], texts_by_digest,
                                known, kb, run_id, outcome)
            except Exception as exc:  # noqa: BLE001 - recorded as this document's failure
                outcome.failures[doc_id] = redaction.summary(exc, 500)
                continue
        outcome.vectors[doc_id] = np.stack([known[d] for d in doc_digests]) if doc_digests else \
            np.zeros((0, embedder.dimensions), dtype=np.float32)
    for doc_id, texts in documents:
        if doc_id in outcome.vectors:
            outcome.tokens[doc_id] = sum(embedder.count_tokens(list(texts))) if texts else 0
    outcome.seconds = time.perf_counter() - started
    return outcome


def _embed_into(embedder, db, batch, texts_by_digest, known, kb, run_id, outcome) -> None:
    result = embedder.embed([texts_by_digest[d] for d in batch])
    if result.vectors.shape != (len(batch), embedder.dimensions):
        raise ValueError(
            f"embedder returned {result.vectors.shape}, expected ({len(batch)}, {embedder.dimensions})"
        )
    pairs = list(zip(batch, result.vectors))
    repository.store_embeddings(db, embedder.fingerprint, pairs)
    known.update(pairs)
    outcome.embedded_texts += len(batch)
    repository.record_usage(
        db, kind="embedding", provider=embedder.provider, model=embedder.model, kb=kb,
        prompt_tokens=result.tokens, inputs=len(batch), dagster_run_id=run_id,
    )
