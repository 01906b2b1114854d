"""The embedded default: Qdrant's own engine in-process (qdrant-edge), one shard per collection.

The engine has no collections or aliases of its own, so this adapter keeps them on disk:
`<root>/collections/<name>/` holds the shard and `meta.json` (dimensions, embedding
fingerprint); `<root>/aliases.json` maps KB aliases to collections (replaced atomically).
Processes share the directory through `StoreHandoff` (see its docstring).

Index builds run on a copy, so that queries are answered while the HNSW graph is built (minutes at
100k points). `rebuild_index` (and `optimize`) follows this protocol in `collections/<name>/`:

1. take the collection's write fence exclusively (`CollectionFence.rebuilding`, handoff.py): the
   writers of this collection (every method that changes a shard goes through `_write`, which
   holds the fence shared) wait from here to step 5; readers never take it;
2. holding the store (`StoreHandoff`): flush and close the live `shard`, copy it to `shard.next`
   (a closed shard directory copied loads; the copy keeps the files' holes); hand the store back;
3. outside the handoff protocol (no other process ever opens `shard.next`): open the copy,
   `optimize()` it, close it and fsync it, while every process goes on querying `shard`. If
   there was nothing to build, delete the copy and skip step 4;
4. holding the store: close the live shard, rename `shard` -> `shard.old` and `shard.next` ->
   `shard` (atomic renames); hand the store back (the other processes closed their shards when it
   was handed to us and open the new `shard` when they get it back);
5. delete `shard.old`, release the fence.

Queries wait only for steps 2 and 4 (a file copy, two renames); writes of that collection wait
for the whole rebuild; other collections are not affected.

Recovery, each time a shard is opened (with the store held), so that a crash at any point leaves
a loadable collection: a missing `shard` means a rebuild died between the two renames of step 4,
when its copy was already built and closed, so `shard.next` becomes `shard` (or `shard.old` goes
back if there is no `shard.next`). Then a leftover `shard.next` (death in steps 2-3: an unfinished
copy) or `shard.old` (death in step 5) is deleted, unless a live process holds `.rebuild` (a
rebuild in progress, whose copy it is); the next open after it retries.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
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
from quivr_pipelines.core.vectorstore.handoff import CollectionFence, StoreHandoff

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
HANDOFF_POLL_SECONDS = 0.05
SHARD, NEXT, OLD = "shard", "shard.next", "shard.old"  # the live shard, a rebuild's copy, the one it replaced
REPORTED_WRITE_WAIT_SECONDS = 1.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexRebuild:
    """What `rebuild_index` did. Timestamps are `time.monotonic()` (system-wide on Linux)."""

    collection: str
    points: int
    rebuilt: bool  # False: the index was already complete (the copy was dropped)
    copy_seconds: float  # queries waited for this (step 2)
    build_seconds: float  # queries answered meanwhile (step 3)
    swap_seconds: float  # queries waited for this (step 4)
    writes_held_seconds: float  # the fence's hold: no writer of the collection waited longer
    build_started: float
    build_finished: float


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
        return self._open(self.resolve_alias_unlocked(collection) or collection)

    def _open(self, name: str) -> EdgeShard:
        """The collection's shard, by its real name (call with the store held)."""
        shard = self._shards.get(name)
        if shard is None:
            path = self._collection_dir(name)
            if not (path / "meta.json").exists():
                raise KeyError(f"collection {name!r} does not exist")
            _recover(path, CollectionFence(path, name))
            shard = EdgeShard.load(str(path / SHARD))
            self._shards[name] = shard
        return shard

    def _write(self, collection: str, fn):
        """Run `fn(shard)` with the store held and the collection's write fence held shared, taken
        before queueing for the store (see handoff.py: never the other way round). The alias is
        resolved once, so the write goes to the collection that was fenced."""
        name = self.resolve_alias_unlocked(collection) or collection
        path = self._collection_dir(name)
        if not (path / "meta.json").exists():
            raise KeyError(f"collection {name!r} does not exist")
        with CollectionFence(path, name).writing() as waited:
            if waited > REPORTED_WRITE_WAIT_SECONDS:
                log.info("a write to %s waited %.1f s for its index rebuild", name, waited)
            return self._run(lambda: fn(self._open(name)))

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
            shard = EdgeShard.create(str(path / SHARD), config)
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

        def write(shard: EdgeShard):
            for kb, document_key, points in items:
                if points:
                    shard.update(UpdateOperation.upsert_points([_edge_point(p) for p in points]))
                shard.update(UpdateOperation.delete_points_by_filter(
                    _document_filter(kb, document_key, min_chunk_index=len(points))))
            shard.flush()

        self._write(collection, write)

    def delete_documents(self, collection: str, kb: str, document_keys: list[str]) -> None:
        def delete(shard: EdgeShard):
            for start in range(0, len(document_keys), 1000):
                shard.update(UpdateOperation.delete_points_by_filter(Filter(must=[
                    FieldCondition(key="kb", match=MatchValue(kb)),
                    FieldCondition(key="document_key", match=MatchAny(document_keys[start:start + 1000])),
                ])))
            shard.flush()

        self._write(collection, delete)

    def delete_document(self, collection: str, kb: str, document_key: str) -> None:
        def delete(shard: EdgeShard):
            shard.update(UpdateOperation.delete_points_by_filter(_document_filter(kb, document_key)))
            shard.flush()

        self._write(collection, delete)

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
        """Build the HNSW index for points written since the last optimisation (on a copy)."""
        return self.rebuild_index(collection).rebuilt

    def rebuild_index(self, collection: str) -> IndexRebuild:
        """The protocol in the module docstring. Call it with the store not held by this thread."""
        name = self.resolve_alias_unlocked(collection) or collection
        path = self._collection_dir(name)
        if not (path / "meta.json").exists():
            raise KeyError(f"collection {name!r} does not exist")
        with CollectionFence(path, name).rebuilding():
            fenced = time.monotonic()

            def copy() -> int:  # step 2
                shard = self._open(name)
                points = shard.count(CountRequest(exact=True))
                shard.flush()
                self._shards.pop(name).close()
                _copy_tree(path / SHARD, path / NEXT)
                # Hand the store back now, not through the watcher thread: `optimize()` holds the
                # GIL, so a keep_open holder could not hand over during the build (measured:
                # one query waited for the whole 30 s build).
                self._close_shards()
                return points

            _remove(path / NEXT)  # an unfinished copy of a dead rebuild: we hold the fence now
            try:
                points = self._run(copy)
                build_started = time.monotonic()
                rebuilt = _build(path / NEXT)  # step 3
                build_finished = time.monotonic()
                if rebuilt:
                    self._run(lambda: self._swap_in(name, path))  # step 4
            finally:
                if (path / SHARD).exists():  # else an error between the renames: `_recover` completes it
                    _remove(path / OLD)  # step 5
                    _remove(path / NEXT)
            released = time.monotonic()
        return IndexRebuild(collection=name, points=points, rebuilt=rebuilt,
                            copy_seconds=build_started - fenced, build_seconds=build_finished - build_started,
                            swap_seconds=released - build_finished, writes_held_seconds=released - fenced,
                            build_started=build_started, build_finished=build_finished)

    def _swap_in(self, name: str, path: Path) -> None:
        shard = self._shards.pop(name, None)
        if shard is not None:
            shard.close()
        _remove(path / OLD)
        os.replace(path / SHARD, path / OLD)
        os.replace(path / NEXT, path / SHARD)
        _fsync(path)

    # -- backups -----------------------------------------------------------------------------------
    def copy_collection(self, collection: str, target: Path) -> int:
        """A consistent copy of the collection's shard into `target` (which must not exist), for a
        backup; returns its point count. The collection's writers wait behind its fence (taken
        exclusively, as an index rebuild does) for the copy; readers only while the store is held,
        which is a file copy that keeps the holes. The copy loads with `EdgeShard.load`."""
        name = self.resolve_alias_unlocked(collection) or collection
        path = self._collection_dir(name)
        if not (path / "meta.json").exists():
            raise KeyError(f"collection {name!r} does not exist")
        with CollectionFence(path, name).rebuilding():
            def copy() -> int:
                shard = self._open(name)
                points = shard.count(CountRequest(exact=True))
                shard.flush()
                self._shards.pop(name).close()
                _copy_tree(path / SHARD, Path(target))
                return points

            return self._run(copy)

    def collection_meta(self, name: str) -> dict:
        """The collection's `meta.json` (dimensions, embedding fingerprint)."""
        return json.loads((self._collection_dir(name) / "meta.json").read_text())

    def adopt_collection(self, name: str, shard_dir: Path, meta: dict) -> None:
        """Make a restored shard directory (on the same file system) the new collection `name`,
        which must not exist: moved into place, then `meta.json` written last (until then it is
        no collection)."""
        def adopt():
            path = self._collection_dir(name)
            if (path / "meta.json").exists():
                raise ValueError(f"collection {name!r} already exists")
            _remove(path)
            path.mkdir(parents=True)
            os.replace(shard_dir, path / SHARD)
            _fsync(path)
            _write_json(path / "meta.json", meta)

        self._run(adopt)

    def aliases(self) -> dict[str, str]:
        """Every alias and the collection it serves."""
        return self._run(self._aliases)

    # -- generations (re-embedding) ---------------------------------------------------------------
    def upsert_points(self, collection: str, points: list[PointRecord]) -> None:
        def write(shard: EdgeShard):
            if points:
                shard.update(UpdateOperation.upsert_points([_edge_point(p) for p in points]))
            shard.flush()

        self._write(collection, write)

    def scroll_points(self, collection: str, kb: str | None, offset: str | None,
                      limit: int) -> tuple[list[Hit], str | None]:
        def page():
            records, following = self._shard(collection).scroll(ScrollRequest(
                offset=offset, limit=limit, filter=_search_filter(SearchFilter(kb=kb)), with_payload=True))
            return ([Hit(id=str(r.id), score=0.0, payload=dict(r.payload or {})) for r in records],
                    None if following is None else str(following))

        return self._run(page)

    def delete_collection(self, name: str) -> bool:
        def drop():
            path = self._collection_dir(name)
            if not (path / "meta.json").exists():
                return False
            if name in self._aliases().values():
                raise ValueError(f"collection {name!r} is served by an alias; move the alias first")
            shard = self._shards.pop(name, None)
            if shard is not None:
                shard.close()
            (path / "meta.json").unlink()  # first: a half-removed directory is no collection
            shutil.rmtree(path, ignore_errors=True)
            return True

        return self._run(drop)

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


def _edge_point(p: PointRecord) -> Point:
    return Point(p.id, {DENSE: p.dense, SPARSE: EdgeSparse(indices=p.sparse.indices, values=p.sparse.values)},
                 p.payload)


def _recover(path: Path, fence: CollectionFence) -> None:
    """Bring a collection left by a dead rebuild back to one `shard` (rule in the module docstring)."""
    if not (path / SHARD).exists():
        leftover = path / NEXT if (path / NEXT).exists() else path / OLD
        if leftover.exists():
            os.replace(leftover, path / SHARD)
            _fsync(path)
    if ((path / NEXT).exists() or (path / OLD).exists()) and not fence.rebuild_running():
        _remove(path / NEXT)
        _remove(path / OLD)


def _build(path: Path) -> bool:
    """Index a copy no other process opens; make it durable before it can be renamed into place."""
    shard = EdgeShard.load(str(path))
    try:
        rebuilt = shard.optimize()
    finally:
        shard.close()
    if rebuilt:
        for directory, _, files in os.walk(path):
            for file in files:
                _fsync(Path(directory) / file)
            _fsync(Path(directory))
    return rebuilt


def _copy_tree(source: Path, target: Path) -> None:
    shutil.copytree(source, target, copy_function=_copy_file)


def _copy_file(source: str, target: str) -> None:
    """Copy the data and keep the holes: the engine preallocates sparse 32 MB files (WAL, vector
    chunks, payload pages), which `shutil.copy2` writes out in full (a 2 MB shard became 165 MB).
    Where the kernel cannot (no copy_file_range, a file system without SEEK_DATA), `copy2`."""
    try:
        with open(source, "rb") as src, open(target, "wb") as dst:
            size = os.fstat(src.fileno()).st_size
            offset = 0
            while offset < size:
                try:
                    data = os.lseek(src.fileno(), offset, os.SEEK_DATA)
                except OSError as error:
                    if error.errno == errno.ENXIO:  # nothing but a hole after offset
                        break
                    raise
                hole = os.lseek(src.fileno(), data, os.SEEK_HOLE)
                while data < hole:
                    copied = os.copy_file_range(src.fileno(), dst.fileno(), hole - data, data, data)
                    if copied == 0:
                        raise OSError(errno.EIO, f"{source} shrank while being copied")
                    data += copied
                offset = hole
            dst.truncate(size)
    except (AttributeError, OSError) as error:
        if isinstance(error, OSError) and error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL,
                                                               errno.EOPNOTSUPP):
            raise
        shutil.copy2(source, target)
        return
    shutil.copystat(source, target)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)
