"""Search a KB through its alias: dense, sparse (BM25-style) or hybrid (RRF in Qdrant).

The query is embedded by the model that embedded the collection behind the alias: with an
`EmbedderRegistry` (core/embedding/registry.py) any configured model's collection is served,
so a re-embedding that swaps the alias needs no restart; without one, the single embedder
given must match (the behaviour before issue 11).
"""

from __future__ import annotations

from quivr_pipelines.core import sparse
from quivr_pipelines.core.vectorstore.base import CollectionInfo, FusionConfig, Hit, SearchFilter, SearchMode


class FingerprintMismatch(Exception):
    """The KB's collection was embedded with a model no configured embedder produces."""


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


def unserved_fingerprint(kb: str, fingerprint: str, registry) -> FingerprintMismatch:
    """The 409 of a collection no configured embedder produces: what it needs, what there is
    (labels without base URLs: API clients see this), and how to fix it."""
    from quivr_pipelines.core.embedding.registry import known_fingerprint

    configured = ", ".join(label.partition("@")[0] for label in registry.configured())
    default = known_fingerprint(registry.default) or "not probed yet"  # no provider call for a message
    return FingerprintMismatch(
        f"knowledge base {kb!r} was embedded with {fingerprint}, which no configured embedder "
        f"produces (the default is {default}; configured: {configured}); "
        "re-embed the KB or add its model to QUIVR_EMBEDDERS (`openai:MODEL[:DIMS][@BASE_URL]`)"
    )


def embedder_for_collection(registry, kb: str, info: CollectionInfo):
    """The configured embedder of the collection's fingerprint, else FingerprintMismatch.
    It may be built here (no provider call: building an embedder never reaches the network)."""
    embedder = registry.for_fingerprint(info.fingerprint)
    if embedder is None:
        raise unserved_fingerprint(kb, info.fingerprint, registry)
    return embedder


def embedder_for_kb(store, registry, kb: str, exact: bool = True) -> tuple[CollectionInfo, object]:
    """(the collection behind the alias, the configured embedder of its fingerprint);
    UnknownKnowledgeBase without a collection, FingerprintMismatch when no embedder fits."""
    info = store.collection_info(kb, exact=exact)
    if info is None:
        raise UnknownKnowledgeBase(f"knowledge base {kb!r} has no collection yet")
    return info, embedder_for_collection(registry, kb, info)


def search(store, embedder, kb: str, query: str, top_k: int = 5, mode: SearchMode = "hybrid",
           flt: SearchFilter | None = None, fusion: FusionConfig | None = None,
           registry=None) -> list[Hit]:
    """`fusion` (hybrid only) defaults to the stores' `DEFAULT_FUSION`. With `registry`, the
    embedder is the one of the KB's collection (`embedder` may be None); without, `embedder`."""
    if registry is not None:
        _, embedder = embedder_for_kb(store, registry, kb, exact=False)  # the count is not used
    else:
        kb_collection(store, kb, embedder.fingerprint, exact=False)
    dense = embedder.embed([query]).vectors[0].tolist() if mode != "sparse" else None
    base = flt or SearchFilter()
    scoped = SearchFilter(kb=kb, document_key_prefix=base.document_key_prefix,
                          content_types=base.content_types, ingested_after=base.ingested_after,
                          ingested_before=base.ingested_before)
    return store.search(kb, dense, sparse.query_vector(query), top_k, scoped, mode, fusion)


def search_kb(settings, kb: str, query: str, top_k: int = 5, mode: SearchMode = "hybrid",
              fusion: FusionConfig | None = None) -> list[Hit]:
    """The CLI's search: the KB's embedder from the configured ones (QUIVR_EMBEDDER, QUIVR_EMBEDDERS)."""
    from quivr_pipelines.core.embedding.registry import EmbedderRegistry
    from quivr_pipelines.core.factory import build_vector_store

    registry = EmbedderRegistry(settings)
    store = build_vector_store(settings)
    try:
        return search(store, None, kb, query, top_k, mode, fusion=fusion, registry=registry)
    finally:
        store.close()
