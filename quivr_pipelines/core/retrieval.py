"""Search a KB through its alias: dense, sparse (BM25-style) or hybrid (RRF in Qdrant)."""

from __future__ import annotations

from quivr_pipelines.core import sparse
from quivr_pipelines.core.vectorstore.base import CollectionInfo, FusionConfig, Hit, SearchFilter, SearchMode


class FingerprintMismatch(Exception):
    """The KB's collection was embedded with another model than the configured embedder."""


class UnknownKnowledgeBase(KeyError):
    """The KB has no collection (never ingested, or a name that does not exist)."""


def kb_collection(store, kb: str, fingerprint: str, exact: bool = True) -> CollectionInfo:
    """The collection behind the KB's alias, refused when it was embedded with another model.
    `exact=False` reads an approximate point count (cheap at any size)."""
    info = store.collection_info(kb, exact=exact)
    if info is None:
        raise UnknownKnowledgeBase(f"knowledge base {kb!r} has no collection yet")
    if info.fingerprint != fingerprint:
        raise FingerprintMismatch(
            f"knowledge base {kb!r} was embedded with {info.fingerprint}, but the configured "
            f"embedder is {fingerprint}; re-embed the KB or configure the same model "
            "(QUIVR_EMBEDDER, QUIVR_OPENAI_EMBEDDING_MODEL, QUIVR_OPENAI_EMBEDDING_DIMENSIONS)"
        )
    return info


def search(store, embedder, kb: str, query: str, top_k: int = 5, mode: SearchMode = "hybrid",
           flt: SearchFilter | None = None, fusion: FusionConfig | None = None) -> list[Hit]:
    """`fusion` (hybrid only) defaults to the stores' `DEFAULT_FUSION`."""
    kb_collection(store, kb, embedder.fingerprint, exact=False)  # the count is not used
    dense = embedder.embed([query]).vectors[0].tolist() if mode != "sparse" else None
    base = flt or SearchFilter()
    scoped = SearchFilter(kb=kb, document_key_prefix=base.document_key_prefix,
                          content_types=base.content_types, ingested_after=base.ingested_after,
                          ingested_before=base.ingested_before)
    return store.search(kb, dense, sparse.query_vector(query), top_k, scoped, mode, fusion)


def search_kb(settings, kb: str, query: str, top_k: int = 5, mode: SearchMode = "hybrid",
              fusion: FusionConfig | None = None) -> list[Hit]:
    from quivr_pipelines.core.factory import build_embedder, build_vector_store

    store = build_vector_store(settings)
    try:
        return search(store, build_embedder(settings), kb, query, top_k, mode, fusion=fusion)
    finally:
        store.close()
