"""Ingest a batch of documents of one KB: read, parse, chunk, embed, write, record.

Plain Python, no Dagster: the Dagster assets, the CLI and the benchmarks all call
`ingest_documents` or `ingest_in_batches`. Every document ends with exactly one outcome
(ingested / skipped / failed, or unchanged / missing when there was nothing to do) and, unless
nothing was done, one catalog row; one document's failure never stops the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from quivr_pipelines.core import events, generations, pii, redaction, sparse
from quivr_pipelines.core.catalog import repository
from quivr_pipelines.core.catalog.database import Database
from quivr_pipelines.core.catalog.repository import DocumentRecord, KbConfig
from quivr_pipelines.core.chunking import Chunk
from quivr_pipelines.core.embedding.base import Embedder
from quivr_pipelines.core.embedding.batching import embed_documents
from quivr_pipelines.core.errors import TRANSIENT_ERRORS, DocumentStatus, ErrorType, IngestionError
from quivr_pipelines.core.generations import Generation
from quivr_pipelines.core.keys import check_object_key, point_id
from quivr_pipelines.core.objects import ObjectInfo, ObjectStore
from quivr_pipelines.core.parsing import ParsedDocument
from quivr_pipelines.core.parsing.workers import ParseJob, ParserPool
from quivr_pipelines.core.vectorstore.base import PointRecord, VectorStore


@dataclass
class DocumentOutcome:
    kb: str
    object_key: str
    status: DocumentStatus  # ingested / skipped / failed, or unchanged / missing: nothing done
    error_type: ErrorType | None = None
    reason: str | None = None
    pages: int | None = None
    elements: int = 0
    chunks: int = 0
    tokens: int = 0
    seconds: float = 0.0
    version: str | None = None
    sha256: str | None = None
    collection: str | None = None
    model: str | None = None
    size_bytes: int | None = None
    pages_with_text: int | None = None  # PDFs: page coverage is pages_with_text / pages
    unread_pages: int = 0
    warning: str | None = None  # ingested, but not whole (pages no reader could read)

    @property
    def ok(self) -> bool:
        return self.status in (DocumentStatus.INGESTED, DocumentStatus.UNCHANGED)


@dataclass
class IngestionContext:
    store: ObjectStore
    vectors: VectorStore
    embedder: Embedder
    db: Database
    defaults: KbConfig
    max_bytes: int
    batch_size: int = 64
    run_id: str | None = None
    # The owner's parser pool, used and left open; None: each call opens one (a worker per core)
    # for its own duration and closes it.
    parser: ParserPool | None = None
    # Embed and index each chunk with its contextual header (core/chunking.py); None: the
    # QUIVR_CHUNK_CONTEXT_HEADERS setting, read once per batch.
    context_headers: bool | None = None
    # The embedders a KB may be served by (a re-embedded KB's model may not be `embedder`); None:
    # built from the environment when a KB needs another model than `embedder`.
    registry: object | None = None
    # Build mode (core/reembed.py, re-chunking): write to this building generation's collection
    # and record per-document rows of it, leaving the catalog's documents (the serving
    # generation's) untouched.
    target: Generation | None = None


@dataclass
class _Prepared:
    info: ObjectInfo
    sha256: str
    parsed: ParsedDocument
    chunks: list[Chunk]
    parse_seconds: float
    started: float
    pii_mode: str = pii.PiiMode.OFF
    chunk_pii: list[dict[str, int]] | None = None  # per chunk, aligned with `chunks` (detect, mask)
    pii_entities: dict[str, int] | None = None  # the document's total
    pii_seconds: float = 0.0


def collection_name(kb: str, fingerprint: str, generation: int = 1) -> str:
    return generations.collection_name(kb, fingerprint, generation)


class KbEmbedderUnavailable(RuntimeError):
    """The KB is served by a model no configured embedder produces."""


def for_kb(ctx: IngestionContext, kb: str) -> IngestionContext:
    """The context with the embedder of the KB's serving collection (a re-embedded KB keeps its
    new model whatever QUIVR_EMBEDDER says; QUIVR_EMBEDDERS lists the others)."""
    if ctx.target is not None:
        return ctx
    current = ctx.vectors.resolve_alias(kb)
    info = ctx.vectors.collection_info(current, exact=False) if current else None
    if info is None or info.fingerprint in (None, ctx.embedder.fingerprint):
        return ctx
    registry = ctx.registry
    if registry is None:
        from quivr_pipelines.core.embedding.registry import EmbedderRegistry
        from quivr_pipelines.settings import get_settings

        registry = EmbedderRegistry(get_settings(), default=ctx.embedder)
    embedder = registry.for_fingerprint(info.fingerprint)
    if embedder is None:
        raise KbEmbedderUnavailable(
            f"knowledge base {kb!r} is served by {info.fingerprint} ({info.name}), which no configured "
            f"embedder produces ({', '.join(registry.configured())}); add it to QUIVR_EMBEDDERS")
    return dataclasses.replace(ctx, embedder=embedder, registry=registry)


def ensure_kb_collection(ctx: IngestionContext, kb: str) -> tuple[KbConfig, str]:
    """The KB's config and the collection its alias points to (created on first use, as its
    generation 1); in build mode, the building generation's collection and chunk sizes."""
    config = repository.ensure_kb(ctx.db, kb, ctx.defaults)
    if ctx.target is not None:
        sizes = {k: v for k, v in ctx.target.chunking.items() if k in repository.CHUNK_SIZE_FIELDS}
        return dataclasses.replace(config, **sizes), ctx.target.collection
    current = ctx.vectors.resolve_alias(kb)
    if current is None:
        current = collection_name(kb, ctx.embedder.fingerprint)
        ctx.vectors.ensure_collection(current, ctx.embedder.dimensions, ctx.embedder.fingerprint)
        ctx.vectors.set_alias(kb, current)
    generations.register_serving(
        ctx.db, kb, current, ctx.embedder.fingerprint, ctx.embedder.dimensions,
        {**{k: getattr(config, k) for k in repository.CHUNK_SIZE_FIELDS}, "context_headers": _context_headers(ctx)})
    repository.set_kb_collection(ctx.db, kb, current, ctx.embedder.fingerprint)
    return config, current


@contextmanager
def _parser(ctx: IngestionContext) -> Iterator[ParserPool]:
    """The context's pool, left open for its owner; or a pool of this call's, closed at its end
    (plain callers, such as benchmarks and tests, need not manage one)."""
    if ctx.parser is not None:
        yield ctx.parser
        return
    with ParserPool() as pool:
        yield pool


def ingest_documents(ctx: IngestionContext, kb: str, keys: Sequence[str], force: bool = False) -> list[DocumentOutcome]:
    ctx = for_kb(ctx, kb)
    config, collection = ensure_kb_collection(ctx, kb)
    with _parser(ctx) as parser:
        outcomes, _ = _finish_batch(ctx, _start_batch(ctx, parser, kb, config, collection, keys, force))
        return outcomes


# A batch is written without its stragglers once none of its documents has finished parsing for
# this long; they are written with a later batch (or at the end of the run) when they are done.
STRAGGLER_SECONDS = 10.0


def ingest_in_batches(ctx: IngestionContext, kb: str, keys: Sequence[str], batch_size: int,
                      force: bool = False, straggler_seconds: float = STRAGGLER_SECONDS,
                      ) -> Iterator[list[DocumentOutcome]]:
    """`ingest_documents` batch after batch, as a pipeline: a background thread embeds and writes
    batch n while the worker processes parse batch n+1 and the caller handles the outcomes of
    batch n-1 (a Dagster run stores two events per document meanwhile). The embedder and the
    event bookkeeping release each other's cores instead of taking turns.

    A slow document does not hold its batch: once no document of a batch has finished parsing
    for `straggler_seconds`, the batch is written without the ones still parsing, which are
    carried and written as soon as they are done (checked after every later batch, waited for at
    the end). Each document still gets exactly one outcome, in some later yield.

    Each yield is finished (written and recorded) before it is handed over; if the caller
    stops early, the batch in hand is finished and nothing more is started."""
    ctx = for_kb(ctx, kb)
    config, collection = ensure_kb_collection(ctx, kb)
    with _parser(ctx) as parser:
        yield from _pipelined(ctx, parser, kb, config, collection, keys, batch_size, force, straggler_seconds)


def _pipelined(ctx: IngestionContext, parser: ParserPool, kb: str, config: KbConfig, collection: str,
               keys: Sequence[str], batch_size: int, force: bool,
               straggler_seconds: float) -> Iterator[list[DocumentOutcome]]:
    batches = [keys[start:start + batch_size] for start in range(0, len(keys), batch_size)]
    finished: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    carried: list[_Batch] = []  # stragglers of earlier batches, still parsing

    def finish(batch: _Batch, stall_seconds: float | None) -> None:
        outcomes, rest = _finish_batch(ctx, batch, stall_seconds)
        if rest is not None:
            carried.append(rest)
        if outcomes:
            hand_over(outcomes)

    def finish_carried(stall_seconds: float | None) -> None:
        waiting, carried[:] = carried[:], []  # `finish` carries what is still parsing again
        for batch in waiting:
            finish(batch, stall_seconds)

    def hand_over(item) -> None:
        while not stop.is_set():
            try:
                finished.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def produce() -> None:
        try:
            pending: _Batch | None = None
            for batch_keys in batches:
                if stop.is_set():
                    return
                started = _start_batch(ctx, parser, kb, config, collection, batch_keys, force)
                if pending is not None:
                    finish(pending, straggler_seconds)
                    finish_carried(0)
                pending = started
            if pending is not None and not stop.is_set():
                finish(pending, straggler_seconds)
            while carried and not stop.is_set():
                finish_carried(None)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            hand_over(exc)
        finally:
            hand_over(_END)

    worker = threading.Thread(target=produce, name="quivr-ingest-batches", daemon=True)
    worker.start()
    try:
        while True:
            item = finished.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


_END = object()


@dataclass
class _Batch:
    kb: str
    collection: str
    keys: list[str]
    outcomes: dict[str, DocumentOutcome]
    records: dict[str, DocumentRecord]
    to_parse: dict[str, tuple]  # key -> (info, sha256, started)
    job: ParseJob
    pii_mode: str = pii.PiiMode.OFF


def _start_batch(ctx: IngestionContext, parser: ParserPool, kb: str, config: KbConfig, collection: str,
                 keys: Sequence[str], force: bool) -> _Batch:
    """Read what changed and hand it to the parser workers; decide the rest (unchanged, gone,
    unreadable) on the spot."""
    known = repository.get_documents(ctx.db, kb, list(keys))
    outcomes: dict[str, DocumentOutcome] = {}
    records: dict[str, DocumentRecord] = {}
    to_parse: dict[str, tuple] = {}
    payloads: list[tuple[str, bytes, str | None]] = []
    for key in keys:
        started = time.perf_counter()
        info = None
        try:
            check_object_key(key)
            info = ctx.store.head(kb, key)
            if info is None:
                raise IngestionError(ErrorType.NOT_FOUND, "object no longer exists in the store")
            if info.refused:  # a link, a hard link, a special file: never read
                _drop_stale_chunks(ctx, collection, kb, key, known.get(key))
                raise IngestionError(ErrorType.HOSTILE_KEY, info.refused)
            row = known.get(key)
            if not force and _unchanged(row, info.etag, ctx.embedder.fingerprint, config.pii):
                outcomes[key] = _unchanged_outcome(kb, key, row, collection, ctx.embedder.fingerprint)
                continue
            content = ctx.store.read(kb, key, ctx.max_bytes)
            info, sha = content.info, content.sha256
            if not force and row and row["sha256"] == sha and _unchanged(row, row["etag"], ctx.embedder.fingerprint,
                                                                          config.pii):
                # Touched but identical (a local mtime change, an S3 copy-in-place): record the new etag.
                outcomes[key] = _unchanged_outcome(kb, key, row, collection, ctx.embedder.fingerprint)
                records[key] = _record_from_row(row, info)
                continue
            to_parse[key] = (info, sha, started)
            payloads.append((key, content.data, info.content_type))
        except Exception as exc:  # noqa: BLE001 - one object's problem must not sink the batch
            error = exc if isinstance(exc, IngestionError) else IngestionError(
                ErrorType.NOT_FOUND if isinstance(exc, FileNotFoundError) else ErrorType.STORAGE_ERROR,
                redaction.summary(exc, 500))
            if error.error_type == ErrorType.NOT_FOUND:
                outcomes[key], gone = _gone(ctx, kb, key, known.get(key), error, collection)
                if gone is not None:
                    records[key] = gone
                continue
            outcomes[key], records[key] = _failure(ctx, kb, key, info, error, collection, started)
    job = parser.submit(payloads, config)
    return _Batch(kb, collection, list(keys), outcomes, records, to_parse, job, pii_mode=config.pii)


def _drop_stale_chunks(ctx: IngestionContext, collection: str, kb: str, key: str, row: dict | None) -> None:
    """What the name held when it was last ingested is stale once its object is refused."""
    if row is not None and row["status"] == DocumentStatus.INGESTED:
        with contextlib.suppress(Exception):  # the refusal itself is recorded either way
            ctx.vectors.delete_document(collection, kb, key)


def _gone(ctx: IngestionContext, kb: str, key: str, row: dict | None, error: IngestionError,
          collection: str) -> tuple[DocumentOutcome, DocumentRecord | None]:
    """An object gone between listing and reading. A document with an outcome of its own keeps
    it: deleting it is the sync's decision (after repeated misses, HEAD-confirmed), not this
    run's. One never ingested (a pending row) has nothing searchable to keep: it is recorded
    `deleted` now with the reason (it stayed `pending` for ever before), under the etag it was
    requested for, so the same object coming back is planned again at once."""
    if row is not None and row["status"] != DocumentStatus.PENDING:
        return DocumentOutcome(kb=kb, object_key=key, status=DocumentStatus.MISSING, reason=error.message), None
    reason = f"{error.message} (gone between listing and reading)"
    if row is not None:  # a pending row may be one reset for re-ingestion: drop what it had
        with contextlib.suppress(Exception):
            ctx.vectors.delete_document(collection, kb, key)
    outcome = DocumentOutcome(kb=kb, object_key=key, status=DocumentStatus.DELETED,
                              error_type=ErrorType.NOT_FOUND, reason=reason, collection=collection)
    record = DocumentRecord(kb=kb, object_key=key, status=DocumentStatus.DELETED, error_type=ErrorType.NOT_FOUND,
                            failure_reason=reason, etag=row["requested_etag"] if row is not None else None,
                            collection=collection, embedding_model=ctx.embedder.fingerprint,
                            dagster_run_id=ctx.run_id)
    return outcome, record


def _finish_batch(ctx: IngestionContext, batch: _Batch,
                  stall_seconds: float | None = None) -> tuple[list[DocumentOutcome], _Batch | None]:
    """Write and record the batch: all of it (`stall_seconds` None), or without the documents
    still parsing after no progress for `stall_seconds`, returned as a batch of their own."""
    kb, collection, outcomes, records = batch.kb, batch.collection, batch.outcomes, batch.records
    parsed, rest = batch.job.ready(stall_seconds)
    carried = None
    if rest is not None:
        late = set(batch.to_parse) - set(parsed)
        carried = _Batch(kb, collection, [key for key in batch.keys if key in late], {}, {},
                         {key: batch.to_parse[key] for key in batch.to_parse if key in late}, rest,
                         pii_mode=batch.pii_mode)
    prepared: dict[str, _Prepared] = {}
    for key, (info, sha, started) in batch.to_parse.items():
        if key not in parsed:
            continue
        result = parsed[key]
        if result.error is not None:
            outcomes[key], records[key] = _failure(ctx, kb, key, info, result.error, collection, started)
        else:
            prepared[key] = _Prepared(info, sha, result.parsed, result.chunks, result.seconds, started)
    for key in _apply_pii(batch.pii_mode, prepared):
        p = prepared.pop(key)
        error = IngestionError(ErrorType.PII_ERROR, "PII analysis failed; nothing of the document was written")
        outcomes[key], records[key] = _failure(ctx, kb, key, p.info, error, collection, p.started)
    if ctx.target is not None:  # building a generation: its own per-document rows
        if prepared:
            _embed_and_write(ctx, kb, collection, prepared, outcomes, records)
        generations.record_generation_documents(ctx.db, kb, ctx.target.generation, [
            {"object_key": r.object_key, "status": str(r.status), "chunk_count": r.chunk_count,
             "token_count": r.token_count, "sha256": r.sha256,
             "error_type": str(r.error_type) if r.error_type else None, "failure_reason": r.failure_reason}
            for r in records.values()])
        return [outcomes[key] for key in batch.keys if key in outcomes], carried
    # Written and recorded under the KB's write lock (shared): a swap to another generation
    # (core/reembed.py) takes it exclusively, so this batch lands wholly before or after it; if
    # it came first, the batch is embedded for and written to the generation that serves now.
    with generations.kb_write_lock(ctx.db, kb):
        serving_now = ctx.vectors.resolve_alias(kb)
        if serving_now is not None and serving_now != collection:
            ctx, collection = for_kb(ctx, kb), serving_now
            for outcome in outcomes.values():
                outcome.collection = collection
        if prepared:
            _embed_and_write(ctx, kb, collection, prepared, outcomes, records)
        repository.record_documents(ctx.db, [dataclasses.replace(r, collection=collection)
                                             if r.collection and r.collection != collection else r
                                             for r in records.values()])
    return [outcomes[key] for key in batch.keys if key in outcomes], carried


def _apply_pii(mode: str, prepared: dict[str, _Prepared]) -> list[str]:
    """The step between parsing and embedding: count (detect) or mask (mask) the entities of
    every chunk text, section title, document title, contextual header and e-mail header, in
    place, before anything is embedded or written.
    Returns the documents whose analysis failed: in `mask` mode they must not be written
    unmasked, and `detect` treats them alike so a mode never writes what it could not check."""
    if mode == pii.PiiMode.OFF:
        return []
    failed = []
    for key, p in prepared.items():
        started = time.perf_counter()
        try:
            texts = pii.scrub([c.text for c in p.chunks], mode)
            email = p.parsed.email.as_payload() if p.parsed.email is not None else {}
            # Titles, headers and e-mail fields repeat on many chunks: each distinct one once.
            labels = sorted({c.section_title for c in p.chunks if c.section_title}
                            | {c.document_title for c in p.chunks if c.document_title}
                            | {c.context for c in p.chunks if c.context} | set(email.values()))
            masked = dict(zip(labels, (s.text for s in pii.scrub(labels, mode))))
        except Exception:  # noqa: BLE001 - the document fails with a reason; its text is not logged
            failed.append(key)
            continue
        p.chunks = [dataclasses.replace(c, text=s.text, section_title=masked.get(c.section_title),
                                        document_title=masked.get(c.document_title),
                                        context=masked.get(c.context, ""))
                    for c, s in zip(p.chunks, texts)]
        if p.parsed.email is not None:
            p.parsed = dataclasses.replace(p.parsed, email=dataclasses.replace(
                p.parsed.email, **{field: masked.get(getattr(p.parsed.email, field))
                                   for field in ("subject", "sender", "to", "date")}))
        p.pii_mode, p.chunk_pii, p.pii_entities = mode, [s.entities for s in texts], pii.total(texts)
        p.pii_seconds = time.perf_counter() - started
    return failed


def _unchanged(row: dict | None, etag: str | None, fingerprint: str, pii_mode: str = pii.PiiMode.OFF) -> bool:
    if row is None or row["etag"] != etag:
        return False
    if row["status"] == DocumentStatus.INGESTED:
        # A document ingested under another PII mode has other texts: not unchanged.
        return row["embedding_model"] == fingerprint and row.get("pii_mode", pii.PiiMode.OFF) == pii_mode
    return (row["status"] in (DocumentStatus.SKIPPED, DocumentStatus.FAILED)
            and row["error_type"] not in TRANSIENT_ERRORS)


def _unchanged_outcome(kb, key, row, collection, fingerprint) -> DocumentOutcome:
    """Nothing to do: the last outcome (ingested, or a permanent failure) still stands."""
    return DocumentOutcome(
        kb=kb, object_key=key, status=DocumentStatus.UNCHANGED,
        error_type=ErrorType(row["error_type"]) if row["error_type"] else None,
        reason=row["failure_reason"], pages=row["page_count"],
        elements=row["element_count"] or 0, chunks=row["chunk_count"], tokens=row["token_count"],
        version=row["version_id"] or row["etag"], sha256=row["sha256"], collection=collection,
        model=fingerprint, size_bytes=row["size_bytes"],
    )


def _record_from_row(row: dict, info: ObjectInfo) -> DocumentRecord:
    fields = {k: row[k] for k in DocumentRecord.__dataclass_fields__ if k in row}
    fields.update(etag=info.etag, version_id=info.version_id, size_bytes=info.size)
    return DocumentRecord(**fields)


def _failure(ctx, kb, key, info, exc: IngestionError, collection, started):
    seconds = time.perf_counter() - started
    events.ingestion_failed(kb=kb, object_key=key, error_type=exc.error_type,
                            error_message=exc.message, status=exc.status)
    outcome = DocumentOutcome(kb=kb, object_key=key, status=exc.status, error_type=exc.error_type,
                              reason=exc.message, seconds=seconds, collection=collection,
                              version=info.version if info else None,
                              size_bytes=info.size if info else None)
    record = DocumentRecord(
        kb=kb, object_key=key, status=exc.status, error_type=exc.error_type, failure_reason=exc.message,
        etag=info.etag if info else None, version_id=info.version_id if info else None,
        size_bytes=info.size if info else None, content_type=info.content_type if info else None,
        source_uri=_safe_uri(ctx, kb, key), total_seconds=seconds, collection=collection,
        embedding_model=ctx.embedder.fingerprint, dagster_run_id=ctx.run_id,
    )
    if exc.error_type != ErrorType.HOSTILE_KEY and exc.error_type not in TRANSIENT_ERRORS:
        # Whatever this document had in the index is stale now (changed into something unreadable);
        # after a transient failure the previous version stays searchable until the retry.
        with contextlib.suppress(Exception):  # the failure itself is already recorded
            ctx.vectors.delete_document(collection, kb, key)
    return outcome, record


def _safe_uri(ctx, kb, key) -> str | None:
    try:
        check_object_key(key)
        return ctx.store.uri(kb, key)
    except IngestionError:
        return None


def _context_headers(ctx: IngestionContext) -> bool:
    if ctx.context_headers is not None:
        return ctx.context_headers
    from quivr_pipelines.settings import Settings

    return Settings().chunk_context_headers


def _indexed_text(chunk: Chunk, headers: bool) -> str:
    """What the dense and the sparse vector are computed from; the payload keeps `chunk.text`."""
    return chunk.embed_text if headers else chunk.text


def _embed_and_write(ctx, kb, collection, prepared: dict[str, _Prepared], outcomes, records) -> None:
    headers = _context_headers(ctx)
    embedded = embed_documents(
        ctx.embedder, ctx.db,
        [(key, [_indexed_text(c, headers) for c in p.chunks]) for key, p in prepared.items()],
        kb=kb, batch_size=ctx.batch_size, run_id=ctx.run_id,
    )
    total_texts = sum(len(p.chunks) for p in prepared.values()) or 1
    ingested_at = datetime.now(UTC).isoformat(timespec="seconds")
    writes = []
    for key, p in prepared.items():
        if key in embedded.failures:
            error = IngestionError(ErrorType.EMBEDDING_ERROR, embedded.failures[key])
            outcomes[key], records[key] = _failure(ctx, kb, key, p.info, error, collection, p.started)
            continue
        points = _points(ctx, kb, key, p, embedded.vectors[key], ingested_at, headers)
        writes.append((key, points))
    write_started = time.perf_counter()
    try:
        ctx.vectors.replace_documents(collection, [(kb, key, points) for key, points in writes])
        write_error = None
    except Exception as exc:  # noqa: BLE001 - recorded per document below
        write_error = IngestionError(ErrorType.VECTOR_STORE_ERROR, redaction.summary(exc, 500))
    write_seconds = time.perf_counter() - write_started
    for key, points in writes:
        p = prepared[key]
        if write_error:
            outcomes[key], records[key] = _failure(ctx, kb, key, p.info, write_error, collection, p.started)
            continue
        share = len(p.chunks) / total_texts
        seconds = time.perf_counter() - p.started
        tokens = embedded.tokens.get(key, 0)
        coverage = _coverage(kb, key, p.parsed)
        outcomes[key] = DocumentOutcome(
            kb=kb, object_key=key, status=DocumentStatus.INGESTED, pages=p.parsed.page_count,
            elements=len(p.parsed.elements), chunks=len(points), tokens=tokens, seconds=seconds,
            version=p.info.version, sha256=p.sha256, collection=collection,
            model=ctx.embedder.fingerprint, size_bytes=p.info.size, **coverage,
        )
        records[key] = DocumentRecord(
            kb=kb, object_key=key, status=DocumentStatus.INGESTED, etag=p.info.etag,
            version_id=p.info.version_id, sha256=p.sha256, size_bytes=p.info.size,
            content_type=p.parsed.content_type, source_uri=ctx.store.uri(kb, key), page_count=p.parsed.page_count,
            element_count=len(p.parsed.elements), chunk_count=len(points), token_count=tokens,
            parse_seconds=p.parse_seconds, embed_seconds=embedded.seconds * share,
            write_seconds=write_seconds * share, total_seconds=seconds, collection=collection,
            embedding_model=ctx.embedder.fingerprint, dagster_run_id=ctx.run_id,
            pii_mode=p.pii_mode, pii_entities=p.pii_entities,
            pii_seconds=p.pii_seconds if p.pii_mode != pii.PiiMode.OFF else None, **coverage,
        )


def _coverage(kb: str, key: str, parsed: ParsedDocument) -> dict:
    """The page-coverage fields of an ingested document's outcome and record; pages no reader
    could read make a warning (and an `ingestion_warning` event): ingested, never silently whole."""
    unread = list(parsed.unread_pages)
    warning = None
    if unread:
        shown = ", ".join(map(str, unread[:20])) + (", ..." if len(unread) > 20 else "")
        read = parsed.pages_with_text or 0
        warning = (f"{len(unread)} of {parsed.page_count} pages could not be read by any PDF reader"
                   f" ({'page' if len(unread) == 1 else 'pages'} {shown}); {read}"
                   f" {'page' if read == 1 else 'pages'} with text {'is' if read == 1 else 'are'} indexed")
        events.ingestion_warning(kb=kb, object_key=key, warning_type="unread_pages", warning=warning,
                                 pages=parsed.page_count, pages_with_text=parsed.pages_with_text,
                                 unread_pages=unread)
    return {"pages_with_text": parsed.pages_with_text, "unread_pages": len(unread), "warning": warning}


def _points(ctx, kb, key, p: _Prepared, vectors, ingested_at, headers: bool = True) -> list[PointRecord]:
    source_uri = ctx.store.uri(kb, key)
    email = p.parsed.email.as_payload() if p.parsed.email is not None else None
    return [
        PointRecord(
            id=point_id(kb, key, chunk.index),
            dense=vectors[i].tolist(),
            sparse=sparse.document_vector(_indexed_text(chunk, headers)),
            payload={
                "kb": kb,
                "document_key": key,
                "version": p.info.version,
                "sha256": p.sha256,
                "chunk_index": chunk.index,
                "text": chunk.text,
                "page_number": chunk.page_number,
                "element_categories": chunk.element_categories,
                "section_title": chunk.section_title,
                "document_title": chunk.document_title,
                **({"email": email} if email else {}),
                "content_type": p.parsed.content_type,
                "source_uri": source_uri,
                "ingested_at": ingested_at,
                "embedding_model": ctx.embedder.fingerprint,
                **({"pii_entities": p.chunk_pii[i]} if p.chunk_pii is not None else {}),
            },
        )
        for i, chunk in enumerate(p.chunks)
    ]
