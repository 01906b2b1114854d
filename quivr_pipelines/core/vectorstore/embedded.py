"""The embedded default: Qdrant's own engine in-process (qdrant-edge), one shard per collection.

The engine has no collections or aliases of its own, so this adapter keeps them on disk:
`<root>/collections/<name>/` holds the shard and `meta.json` (dimensions, embedding
fingerprint); `<root>/aliases.json` maps KB aliases to collections (replaced atomically).
Processes share the directory through `StoreHandoff` (see its docstring).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

from qdrant_edge import (
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeShard,
    EdgeSparseVectorParams,
    EdgeVectorParams,
    FieldCondition,
    Filter,
    Fusion,
    KeywordIndexParams,
    MatchAny,
    MatchPrefix,
    MatchValue,
    Modifier,
    PayloadSchemaType,
    Point,
    Prefetch,
    Query,
    QueryRequest,
    RangeDateTime,
    RangeFloat,
    ScrollRequest,
    UpdateOperation,
)
from qdrant_edge import SparseVector as EdgeSparse

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
from quivr_pipelines.core.vectorstore.handoff import StoreHandoff

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
HANDOFF_POLL_SECONDS = 0.05


def _document_filter(kb: str, document_key: str, min_chunk_index: int | None = None) -> Filter:
    must = [FieldCondition(key="kb", match=MatchValue(kb)),
            FieldCondition(key="document_key", match=MatchValue(document_key))]
    if min_chunk_index is not None:
        must.append(FieldCondition(key="chunk_index", range=RangeFloat(gte=min_chunk_index)))
    return Filter(must=must)


def _search_filter(flt: SearchFilter | None) -> Filter | None:
    if flt is None:
        return None
    must = []
    if flt.kb:
        must.append(FieldCondition(key="kb", match=MatchValue(flt.kb)))
    if flt.document_key_prefix:
        must.append(FieldCondition(key="document_key", match=MatchPrefix(flt.document_key_prefix)))
    if flt.content_types:
        must.append(FieldCondition(key="content_type", match=MatchAny(list(flt.content_types))))
    if flt.ingested_after or flt.ingested_before:
        must.append(FieldCondition(key="ingested_at", range=RangeDateTime(
            gte=flt.ingested_after, lte=flt.ingested_before)))
    return Filter(must=must) if must else None


class EmbeddedStore:
    """`keep_open=True` (Dagster runs, the query service, benchmarks): hold the store between
    calls and hand it over when another process queues for it (see `StoreHandoff`).
    `keep_open=False` (CLI commands): hold it only inside each call."""

    def __init__(self, root: Path, keep_open: bool = False):
        self.root = Path(root).resolve()
        (self.root / "collections").mkdir(parents=True, exist_ok=True)
        self.keep_open = keep_open
        self.handoff = StoreHandoff(self.root)
        self._shards: dict[str, EdgeShard] = {}
        self._closed = False
        if keep_open:
            threading.Thread(target=self._watch_for_waiters, daemon=True,
                             name="quivr-embedded-handoff").start()

    # -- holding the store -------------------------------------------------------------------
    def _watch_for_waiters(self) -> None:
        while True:
            time.sleep(HANDOFF_POLL_SECONDS)
            with self.handoff.mutex():
                if self._closed:
                    return
                if self.handoff.held and self.handoff.someone_waiting():
                    self._close_shards()

    def _close_shards(self) -> None:
        for shard in self._shards.values():
            shard.close()
        self._shards.clear()
        self.handoff.release()

    def _run(self, fn):
        with self.handoff.mutex():
            if self.handoff.held and self.keep_open and self.handoff.someone_waiting():
                self._close_shards()
            self.handoff.acquire()
            try:
                return fn()
            finally:
                if not self.keep_open:
                    self._close_shards()

    def _shard(self, collection: str) -> EdgeShard:
        name = self.resolve_alias_unlocked(collection) or collection
        shard = self._shards.get(name)
        if shard is None:
            path = self._collection_dir(name)
            if not (path / "meta.json").exists():
                raise KeyError(f"collection {name!r} does not exist")
            shard = EdgeShard.load(str(path / "shard"))
            self._shards[name] = shard
        return shard

    def _collection_dir(self, name: str) -> Path:
        if not COLLECTION_NAME.match(name):
            raise ValueError(f"invalid collection name {name!r}")
        return self.root / "collections" / name

    # -- collections and aliases ---------------------------------------------------------------
    def ensure_collection(self, name: str, dimensions: int, fingerprint: str) -> None:
        def create():
            path = self._collection_dir(name)
            if (path / "meta.json").exists():
                return
            path.mkdir(parents=True, exist_ok=True)
            config = EdgeConfig(
                vectors={DENSE: EdgeVectorParams(size=dimensions, distance=Distance.Cosine)},
                sparse_vectors={SPARSE: EdgeSparseVectorParams(modifier=Modifier.Idf)},
            )
            shard = EdgeShard.create(str(path / "shard"), config)
            for field_name in KEYWORD_FIELDS:
                params = KeywordIndexParams(prefix=True) if field_name == "document_key" else PayloadSchemaType.Keyword
                shard.update(UpdateOperation.create_field_index(field_name, params))
            for field_name in INTEGER_FIELDS:
                shard.update(UpdateOperation.create_field_index(field_name, PayloadSchemaType.Integer))
            for field_name in DATETIME_FIELDS:
                shard.update(UpdateOperation.create_field_index(field_name, PayloadSchemaType.Datetime))
            self._shards[name] = shard
            _write_json(path / "meta.json", {"dimensions": dimensions, "embedding_fingerprint": fingerprint})

        self._run(create)

    def collection_info(self, name: str, exact: bool = True) -> CollectionInfo | None:
        def info():
            real = self.resolve_alias_unlocked(name) or name
            meta_path = self._collection_dir(real) / "meta.json"
            if not meta_path.exists():
                return None
            meta = json.loads(meta_path.read_text())
            return CollectionInfo(name=real, points=self._shard(real).count(CountRequest(exact=exact)),
                                  dimensions=meta["dimensions"], fingerprint=meta.get("embedding_fingerprint"))

        return self._run(info)

    def list_collections(self) -> list[str]:
        return sorted(p.name for p in (self.root / "collections").iterdir() if (p / "meta.json").exists())

    def _aliases(self) -> dict[str, str]:
        path = self.root / "aliases.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def resolve_alias_unlocked(self, alias: str) -> str | None:
        return self._aliases().get(alias)

    def resolve_alias(self, alias: str) -> str | None:
        return self._run(lambda: self.resolve_alias_unlocked(alias))

    def set_alias(self, alias: str, collection: str) -> None:
        def swap():
            if not (self._collection_dir(collection) / "meta.json").exists():
                raise KeyError(f"collection {collection!r} does not exist")
            aliases = self._aliases()
            aliases[alias] = collection
            _write_json(self.root / "aliases.json", aliases)

        self._run(swap)

    # -- points ----------------------------------------------------------------------------------
    def replace_document(self, collection: str, kb: str, document_key: str,
                         points: list[PointRecord]) -> None:
        self.replace_documents(collection, [(kb, document_key, points)])

    def replace_documents(self, collection: str, items: list[tuple[str, str, list[PointRecord]]]) -> None:
        """Several documents in one hold of the store and one flush (without `keep_open`, also one
        open and close for the whole batch)."""

        def write():
            shard = self._shard(collection)
            for kb, document_key, points in items:
                if points:
                    shard.update(UpdateOperation.upsert_points([
                        Point(p.id, {DENSE: p.dense, SPARSE: EdgeSparse(indices=p.sparse.indices,
                                                                         values=p.sparse.values)},
                              p.payload)
                        for p in points
                    ]))
                shard.update(UpdateOperation.delete_points_by_filter(
                    _document_filter(kb, document_key, min_chunk_index=len(points))))
            shard.flush()

        self._run(write)

    def delete_documents(self, collection: str, kb: str, document_keys: list[str]) -> None:
        def delete():
            shard = self._shard(collection)
            for start in range(0, len(document_keys), 1000):
                shard.update(UpdateOperation.delete_points_by_filter(Filter(must=[
                    FieldCondition(key="kb", match=MatchValue(kb)),
                    FieldCondition(key="document_key", match=MatchAny(document_keys[start:start + 1000])),
                ])))
            shard.flush()

        self._run(delete)

    def delete_document(self, collection: str, kb: str, document_key: str) -> None:
        def delete():
            shard = self._shard(collection)
            shard.update(UpdateOperation.delete_points_by_filter(_document_filter(kb, document_key)))
            shard.flush()

        self._run(delete)

    def chunk_counts(self, collection: str, kb: str) -> dict[str, int]:
        """document key -> number of points, for the whole KB (payload field only, paged)."""
        def scan():
            shard = self._shard(collection)
            counts: dict[str, int] = {}
            offset = None
            while True:
                records, offset = shard.scroll(ScrollRequest(offset=offset, limit=1000,
                                                             filter=_search_filter(SearchFilter(kb=kb)),
                                                             with_payload=["document_key"]))
                for record in records:
                    key = (record.payload or {}).get("document_key")
                    counts[key] = counts.get(key, 0) + 1
                if offset is None:
                    return counts

        return self._run(scan)

    def document_points(self, collection: str, kb: str, document_key: str) -> list[Hit]:
        def scroll():
            shard = self._shard(collection)
            hits, offset = [], None
            while True:
                records, offset = shard.scroll(ScrollRequest(
                    offset=offset, limit=256, filter=_document_filter(kb, document_key), with_payload=True))
                hits.extend(Hit(id=str(r.id), score=0.0, payload=dict(r.payload or {})) for r in records)
                if offset is None:
                    return sorted(hits, key=lambda h: h.payload.get("chunk_index", 0))

        return self._run(scroll)

    def count(self, collection: str, kb: str | None = None, document_key: str | None = None) -> int:
        flt = _document_filter(kb, document_key) if kb and document_key else _search_filter(SearchFilter(kb=kb))
        return self._run(lambda: self._shard(collection).count(CountRequest(filter=flt, exact=True)))

    def search(self, collection: str, dense: list[float] | None, sparse: SparseVector | None,
               limit: int, flt: SearchFilter | None = None, mode: SearchMode = "hybrid",
               fusion: FusionConfig | None = None) -> list[Hit]:
        query_filter = _search_filter(flt)
        sparse_query = EdgeSparse(indices=sparse.indices, values=sparse.values) if sparse is not None else None
        if mode == "dense":
            request = QueryRequest(query=Query.Nearest(dense, using=DENSE), filter=query_filter,
                                   limit=limit, with_payload=True)
        elif mode == "sparse":
            request = QueryRequest(query=Query.Nearest(sparse_query, using=SPARSE), filter=query_filter,
                                   limit=limit, with_payload=True)
        else:
            fusion = fusion or DEFAULT_FUSION
            depth = fusion.prefetch_depth(limit)
            request = QueryRequest(
                prefetches=[Prefetch(query=Query.Nearest(dense, using=DENSE), limit=depth, filter=query_filter),
                            Prefetch(query=Query.Nearest(sparse_query, using=SPARSE), limit=depth,
                                     filter=query_filter)],
                query=(Fusion.Rrf(k=fusion.k, weights=fusion.weights()) if fusion.method == "rrf"
                       else Fusion.Dbsf()),
                filter=query_filter, limit=limit + TIE_MARGIN, with_payload=True)
        points = self._run(lambda: self._shard(collection).query(request))
        return settle_ties([Hit(id=str(p.id), score=p.score, payload=dict(p.payload or {})) for p in points], limit)

    def optimize(self, collection: str) -> bool:
        """Build the HNSW index for points written since the last optimisation."""
        return self._run(lambda: self._shard(collection).optimize())

    def close(self) -> None:
        with self.handoff.mutex():
            self._closed = True
            self._close_shards()
            self.handoff.close()

    # -- inspection (re-embedding gates) -------------------------------------------------------
    def payload_indexes(self, collection: str) -> dict[str, str]:
        """The shard's own payload schema (`EdgeShard.info()`), types as lower-case names."""
        def read():
            schema = self._shard(collection).info().payload_schema
            return {name: str(index.data_type).rsplit(".", 1)[-1].lower() for name, index in schema.items()}

        return self._run(read)

    def sample_points(self, collection: str, limit: int, kb: str | None = None) -> list[Hit]:
        def scroll():
            records, _ = self._shard(collection).scroll(ScrollRequest(
                limit=limit, filter=_search_filter(SearchFilter(kb=kb)), with_payload=True))
            return [Hit(id=str(r.id), score=0.0, payload=dict(r.payload or {})) for r in records]

        return self._run(scroll)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)
