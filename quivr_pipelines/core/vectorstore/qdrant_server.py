"""A Qdrant server through qdrant-client (tested against qdrant-client's local mode)."""

from __future__ import annotations

from qdrant_client import QdrantClient, models

from quivr_pipelines.core.sparse import SparseVector
from quivr_pipelines.core.vectorstore.base import (
    DATETIME_FIELDS,
    DEFAULT_FUSION,
    DENSE,
    INTEGER_FIELDS,
    KEYWORD_FIELDS,
    SPARSE,
    TIE_MARGIN,
    CollectionInfo,
    FusionConfig,
    Hit,
    PointRecord,
    SearchFilter,
    SearchMode,
    settle_ties,
)


def document_filter(kb: str, document_key: str, min_chunk_index: int | None = None) -> models.Filter:
    must = [
        models.FieldCondition(key="kb", match=models.MatchValue(value=kb)),
        models.FieldCondition(key="document_key", match=models.MatchValue(value=document_key)),
    ]
    if min_chunk_index is not None:
        must.append(models.FieldCondition(key="chunk_index", range=models.Range(gte=min_chunk_index)))
    return models.Filter(must=must)


def search_filter(flt: SearchFilter | None) -> models.Filter | None:
    if flt is None:
        return None
    must: list = []
    if flt.kb:
        must.append(models.FieldCondition(key="kb", match=models.MatchValue(value=flt.kb)))
    if flt.document_key_prefix:
        must.append(models.FieldCondition(key="document_key", match=models.MatchPrefix(prefix=flt.document_key_prefix)))
    if flt.content_types:
        must.append(models.FieldCondition(key="content_type", match=models.MatchAny(any=list(flt.content_types))))
    if flt.ingested_after or flt.ingested_before:
        must.append(models.FieldCondition(key="ingested_at", range=models.DatetimeRange(
            gte=flt.ingested_after, lte=flt.ingested_before)))
    return models.Filter(must=must) if must else None


class QdrantServerStore:
    def __init__(self, client: QdrantClient):
        self.client = client

    @classmethod
    def connect(cls, url: str, api_key: str | None = None, prefer_grpc: bool = False,
                timeout: float = 30.0) -> QdrantServerStore:
        return cls(QdrantClient(url=url, api_key=api_key, prefer_grpc=prefer_grpc, timeout=int(timeout)))

    def ensure_collection(self, name: str, dimensions: int, fingerprint: str) -> None:
        if self.client.collection_exists(name):
            return
        self.client.create_collection(
            name,
            vectors_config={DENSE: models.VectorParams(size=dimensions, distance=models.Distance.COSINE)},
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            metadata={"embedding_fingerprint": fingerprint, "dimensions": dimensions},
        )
        for field_name in KEYWORD_FIELDS:
            self.client.create_payload_index(name, field_name, models.PayloadSchemaType.KEYWORD)
        for field_name in INTEGER_FIELDS:
            self.client.create_payload_index(name, field_name, models.PayloadSchemaType.INTEGER)
        for field_name in DATETIME_FIELDS:
            self.client.create_payload_index(name, field_name, models.PayloadSchemaType.DATETIME)

    def collection_info(self, name: str, exact: bool = True) -> CollectionInfo | None:
        name = self.resolve_alias(name) or name
        if not self.client.collection_exists(name):
            return None
        info = self.client.get_collection(name)
        metadata = info.config.metadata or {}
        vectors = info.config.params.vectors
        dims = vectors[DENSE].size if isinstance(vectors, dict) else vectors.size
        return CollectionInfo(name=name, points=self.client.count(name, exact=exact).count,
                              dimensions=dims, fingerprint=metadata.get("embedding_fingerprint"))

    def list_collections(self) -> list[str]:
        return sorted(c.name for c in self.client.get_collections().collections)

    def resolve_alias(self, alias: str) -> str | None:
        for description in self.client.get_aliases().aliases:
            if description.alias_name == alias:
                return description.collection_name
        return None

    def set_alias(self, alias: str, collection: str) -> None:
        operations = []
        if self.resolve_alias(alias) is not None:
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        operations.append(models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name=collection, alias_name=alias)))
        self.client.update_collection_aliases(change_aliases_operations=operations)

    def replace_document(self, collection: str, kb: str, document_key: str,
                         points: list[PointRecord]) -> None:
        if points:
            self.client.upsert(collection, wait=True, points=[_point(p) for p in points])
        self.client.delete(collection, wait=True, points_selector=models.FilterSelector(
            filter=document_filter(kb, document_key, min_chunk_index=len(points))))

    def replace_documents(self, collection: str, items: list[tuple[str, str, list[PointRecord]]]) -> None:
        for kb, document_key, points in items:
            self.replace_document(collection, kb, document_key, points)

    def optimize(self, collection: str) -> bool:
        return False  # a Qdrant server indexes by itself

    def delete_documents(self, collection: str, kb: str, document_keys: list[str]) -> None:
        for start in range(0, len(document_keys), 1000):
            keys = document_keys[start:start + 1000]
            self.client.delete(collection, wait=True, points_selector=models.FilterSelector(filter=models.Filter(must=[
                models.FieldCondition(key="kb", match=models.MatchValue(value=kb)),
                models.FieldCondition(key="document_key", match=models.MatchAny(any=keys)),
            ])))

    def delete_document(self, collection: str, kb: str, document_key: str) -> None:
        self.client.delete(collection, wait=True,
                           points_selector=models.FilterSelector(filter=document_filter(kb, document_key)))

    def chunk_counts(self, collection: str, kb: str) -> dict[str, int]:
        """document key -> number of points, for the whole KB (payload field only, paged)."""
        counts: dict[str, int] = {}
        offset = None
        while True:
            records, offset = self.client.scroll(collection, scroll_filter=search_filter(SearchFilter(kb=kb)),
                                                 limit=1000, offset=offset, with_payload=["document_key"])
            for record in records:
                key = (record.payload or {}).get("document_key")
                counts[key] = counts.get(key, 0) + 1
            if offset is None:
                return counts

    def document_points(self, collection: str, kb: str, document_key: str) -> list[Hit]:
        hits, offset = [], None
        while True:
            records, offset = self.client.scroll(collection, scroll_filter=document_filter(kb, document_key),
                                                 limit=256, offset=offset, with_payload=True)
            hits.extend(Hit(id=str(r.id), score=0.0, payload=r.payload or {}) for r in records)
            if offset is None:
                return sorted(hits, key=lambda h: h.payload.get("chunk_index", 0))

    def count(self, collection: str, kb: str | None = None, document_key: str | None = None) -> int:
        flt = document_filter(kb, document_key) if kb and document_key else search_filter(SearchFilter(kb=kb))
        return self.client.count(collection, count_filter=flt, exact=True).count

    def search(self, collection: str, dense: list[float] | None, sparse: SparseVector | None,
               limit: int, flt: SearchFilter | None = None, mode: SearchMode = "hybrid",
               fusion: FusionConfig | None = None) -> list[Hit]:
        query_filter = search_filter(flt)
        sparse_query = (models.SparseVector(indices=sparse.indices, values=sparse.values)
                        if sparse is not None else None)
        if mode == "dense":
            response = self.client.query_points(collection, query=dense, using=DENSE, limit=limit,
                                                query_filter=query_filter, with_payload=True)
        elif mode == "sparse":
            response = self.client.query_points(collection, query=sparse_query, using=SPARSE, limit=limit,
                                                query_filter=query_filter, with_payload=True)
        else:
            fusion = fusion or DEFAULT_FUSION
            depth = fusion.prefetch_depth(limit)
            # k always explicit: a bare `Fusion.RRF` means k=2 on Qdrant, not the DEFAULT_FUSION k used here
            # and by the embedded store (needs a server that knows the parameterised `rrf` query).
            fused = (models.FusionQuery(fusion=models.Fusion.DBSF) if fusion.method == "dbsf"
                     else models.RrfQuery(rrf=models.Rrf(k=fusion.k, weights=fusion.weights())))
            response = self.client.query_points(
                collection,
                prefetch=[
                    models.Prefetch(query=dense, using=DENSE, limit=depth, filter=query_filter),
                    models.Prefetch(query=sparse_query, using=SPARSE, limit=depth, filter=query_filter),
                ],
                query=fused, limit=limit + TIE_MARGIN, query_filter=query_filter, with_payload=True,
            )
        return settle_ties([Hit(id=str(p.id), score=p.score, payload=p.payload or {}) for p in response.points],
                           limit)

    # -- generations (re-embedding) ---------------------------------------------------------------
    def upsert_points(self, collection: str, points: list[PointRecord]) -> None:
        if points:
            self.client.upsert(collection, wait=True, points=[_point(p) for p in points])

    def scroll_points(self, collection: str, kb: str | None, offset: str | None,
                      limit: int) -> tuple[list[Hit], str | None]:
        records, following = self.client.scroll(collection, scroll_filter=search_filter(SearchFilter(kb=kb)),
                                                limit=limit, offset=offset, with_payload=True)
        return ([Hit(id=str(r.id), score=0.0, payload=r.payload or {}) for r in records],
                None if following is None else str(following))

    def delete_collection(self, name: str) -> bool:
        if not self.client.collection_exists(name):
            return False
        if any(a.collection_name == name for a in self.client.get_aliases().aliases):
            raise ValueError(f"collection {name!r} is served by an alias; move the alias first")
        return bool(self.client.delete_collection(name))

    # -- inspection (re-embedding gates) -------------------------------------------------------
    def payload_indexes(self, collection: str) -> dict[str, str]:
        """The server's payload schema. qdrant-client's local mode keeps no payload index, so
        it reports none (and the payload-index gate fails there, which is the truth)."""
        name = self.resolve_alias(collection) or collection
        schema = self.client.get_collection(name).payload_schema or {}
        return {field: str(getattr(index.data_type, "value", index.data_type)).lower()
                for field, index in schema.items()}

    def sample_points(self, collection: str, limit: int, kb: str | None = None) -> list[Hit]:
        records, _ = self.client.scroll(collection, scroll_filter=search_filter(SearchFilter(kb=kb)),
                                        limit=limit, with_payload=True)
        return [Hit(id=str(r.id), score=0.0, payload=r.payload or {}) for r in records]

    def close(self) -> None:
        self.client.close()


def _point(p: PointRecord) -> models.PointStruct:
    return models.PointStruct(
        id=p.id, payload=p.payload,
        vector={DENSE: p.dense, SPARSE: models.SparseVector(indices=p.sparse.indices, values=p.sparse.values)})
