"""Collection generations: which collection serves a KB, which one is being built, which ones can
serve again (the rollback window). Plain catalog code; the vector store's alias is the switch.

A generation's collection is named after its KB, its embedding model and its number
(`kb_<kb>__<model slug>__g<n>`), so a re-chunking with the same model never collides with the
collection it replaces. Collections made before generations existed (`kb_<kb>__<slug>`) are
generation 0 of their KB and keep their name.

The catalog row and the alias agree except for an instant inside `swap`/`rollback` (alias first,
then the catalog); `settle` repairs a process killed in between, from the alias (the truth of
what is served).

Writes to a KB's serving collection (ingestion batches, prune) hold the KB's write lock shared;
a swap holds it exclusively while it catches the new generation up with the last changes and
moves the alias, so no write lands in the old generation after its final catch-up.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from quivr_pipelines.core.catalog.database import Database

BUILDING, SERVING, RETIRED, FAILED, DELETED = "building", "serving", "retired", "failed", "deleted"
GENERATION_SUFFIX = re.compile(r"__g(\d+)$")
NAME_LIMIT = 200


def model_slug(fingerprint: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", fingerprint.lower()).strip("-")


def collection_name(kb: str, fingerprint: str, generation: int = 1) -> str:
    suffix = f"__g{generation}"
    return f"kb_{kb}__{model_slug(fingerprint)}"[:NAME_LIMIT - len(suffix)] + suffix


def generation_of(collection: str) -> int:
    """The generation a collection name carries; 0 for a name from before generations."""
    match = GENERATION_SUFFIX.search(collection)
    return int(match.group(1)) if match else 0


@dataclass(frozen=True)
class Generation:
    kb: str
    generation: int
    collection: str
    fingerprint: str
    dimensions: int
    state: str
    mode: str = "initial"  # initial (ingested), copy (texts from the serving one), rechunk, index
    embedder_spec: str | None = None
    chunking: dict[str, Any] = field(default_factory=dict)
    source_generation: int | None = None
    reason: str | None = None
    dagster_run_id: str | None = None
    cursor: str | None = None
    chunks_total: int = 0
    chunks_done: int = 0
    chunks_cached: int = 0
    chunks_embedded: int = 0
    tokens: int = 0
    build_seconds: float = 0.0
    caught_up_at: datetime | None = None
    gates: dict[str, Any] | None = None
    golden_set: list[dict] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    serving_since: datetime | None = None
    retired_at: datetime | None = None
    deleted_at: datetime | None = None

    @classmethod
    def from_row(cls, row: dict) -> Generation:
        values = {k: row[k] for k in cls.__dataclass_fields__ if k in row}
        values["fingerprint"] = row["embedding_model"]
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()
                if k not in ("golden_set",)}


_COLUMNS = ("kb, generation, collection, embedding_model, dimensions, embedder_spec, chunking, mode, state,"
            " source_generation, reason, dagster_run_id, cursor, chunks_total, chunks_done, chunks_cached,"
            " chunks_embedded, tokens, build_seconds, caught_up_at, gates, golden_set, created_at, updated_at,"
            " serving_since, retired_at, deleted_at")


def _select(db: Database, where: str, params: tuple, order: str = "generation") -> list[Generation]:
    with db.transaction() as conn:
        rows = conn.cursor(row_factory=dict_row).execute(
            f"SELECT {_COLUMNS} FROM collection_generations WHERE {where} ORDER BY {order}", params).fetchall()
    return [Generation.from_row(row) for row in rows]


def get(db: Database, kb: str, generation: int) -> Generation | None:
    found = _select(db, "kb = %s AND generation = %s", (kb, generation))
    return found[0] if found else None


def serving(db: Database, kb: str) -> Generation | None:
    found = _select(db, f"kb = %s AND state = '{SERVING}'", (kb,))
    return found[0] if found else None


def building(db: Database, kb: str) -> Generation | None:
    found = _select(db, f"kb = %s AND state = '{BUILDING}'", (kb,))
    return found[0] if found else None


def of_run(db: Database, run_id: str) -> Generation | None:
    """The generation a Dagster run built (the checks of a re-embedding run find theirs so)."""
    found = _select(db, "dagster_run_id = %s", (run_id,), order="generation DESC")
    return found[0] if found else None


def history(db: Database, kb: str | None = None) -> list[Generation]:
    if kb is None:
        return _select(db, "true", (), order="kb, generation")
    return _select(db, "kb = %s", (kb,))


def live_collections(db: Database, kb: str) -> list[str]:
    """Collections a change of the KB must reach: the serving one and a building one."""
    return [g.collection for g in _select(db, f"kb = %s AND state IN ('{SERVING}', '{BUILDING}')", (kb,))]


def register_serving(db: Database, kb: str, collection: str, fingerprint: str, dimensions: int,
                     chunking: dict[str, Any], embedder_spec: str | None = None) -> None:
    """Record the collection a KB's alias already serves (its first ingestion, or a KB from
    before generations) when the catalog has no serving row yet; a no-op otherwise."""
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO collection_generations (kb, generation, collection, embedding_model, dimensions,"
            " embedder_spec, chunking, mode, state, serving_since)"
            f" SELECT %s, %s, %s, %s, %s, %s, %s, 'initial', '{SERVING}', now()"
            f" WHERE NOT EXISTS (SELECT 1 FROM collection_generations WHERE kb = %s AND state = '{SERVING}')"
            " ON CONFLICT DO NOTHING",
            (kb, generation_of(collection), collection, fingerprint, dimensions, embedder_spec,
             Jsonb(chunking), kb),
        )


def next_generation(db: Database, kb: str) -> int:
    with db.transaction() as conn:
        row = conn.execute("SELECT coalesce(max(generation), 0) FROM collection_generations WHERE kb = %s",
                           (kb,)).fetchone()
    return row[0] + 1


class BuildInProgress(RuntimeError):
    """The KB already has a building generation (one at a time)."""


def start_building(db: Database, kb: str, *, fingerprint: str, dimensions: int, embedder_spec: str,
                   chunking: dict[str, Any], mode: str, source_generation: int | None,
                   run_id: str | None, chunks_total: int = 0) -> Generation:
    """A new building generation (its collection is created by the caller)."""
    import psycopg

    generation = next_generation(db, kb)
    collection = collection_name(kb, fingerprint, generation)
    try:
        with db.transaction() as conn:
            conn.execute(
                "INSERT INTO collection_generations (kb, generation, collection, embedding_model, dimensions,"
                " embedder_spec, chunking, mode, state, source_generation, dagster_run_id, chunks_total)"
                f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, '{BUILDING}', %s, %s, %s)",
                (kb, generation, collection, fingerprint, dimensions, embedder_spec, Jsonb(chunking), mode,
                 source_generation, run_id, chunks_total),
            )
    except psycopg.errors.UniqueViolation:
        current = building(db, kb)
        raise BuildInProgress(f"{kb} already has a building generation"
                              + (f" ({current.generation}, {current.collection})" if current else "")) from None
    return get(db, kb, generation)


def update(db: Database, kb: str, generation: int, **values: Any) -> None:
    """Set progress fields (cursor, chunks_*, tokens, build_seconds, reason, gates, golden_set,
    caught_up_at, dagster_run_id, chunks_total)."""
    allowed = {"cursor", "chunks_total", "chunks_done", "chunks_cached", "chunks_embedded", "tokens",
               "build_seconds", "reason", "gates", "golden_set", "caught_up_at", "dagster_run_id"}
    if set(values) - allowed:
        raise ValueError(f"not a progress field: {sorted(set(values) - allowed)}")
    if not values:
        return
    params = {k: Jsonb(v) if k in ("gates", "golden_set") and v is not None else v for k, v in values.items()}
    assignments = ", ".join(f"{k} = %({k})s" for k in params)
    with db.transaction() as conn:
        conn.execute(f"UPDATE collection_generations SET {assignments}, updated_at = now()"
                     " WHERE kb = %(kb_)s AND generation = %(generation_)s",
                     {**params, "kb_": kb, "generation_": generation})


def set_state(db: Database, kb: str, generation: int, state: str, reason: str | None = None) -> None:
    stamp = {RETIRED: ", retired_at = now()", DELETED: ", deleted_at = now()",
             SERVING: ", serving_since = now()"}.get(state, "")
    with db.transaction() as conn:
        conn.execute(f"UPDATE collection_generations SET state = %s, reason = coalesce(%s, reason),"
                     f" updated_at = now(){stamp} WHERE kb = %s AND generation = %s",
                     (state, reason, kb, generation))


def database_now(db: Database) -> datetime:
    with db.transaction() as conn:
        return conn.execute("SELECT now()").fetchone()[0]


def changed_since(db: Database, kb: str, since: datetime | None) -> dict[str, dict]:
    """Catalog rows of the KB updated at or after `since` (all rows when None): what a building
    generation must catch up with. A row's updated_at moves on every outcome and deletion."""
    with db.transaction() as conn:
        cur = conn.cursor(row_factory=dict_row)
        rows = cur.execute(
            "SELECT object_key, status, chunk_count, sha256, updated_at FROM documents"
            " WHERE kb = %s AND (%s::timestamptz IS NULL OR updated_at >= %s::timestamptz)",
            (kb, since, since)).fetchall()
    return {row["object_key"]: row for row in rows}


def swap_catalog(db: Database, kb: str, new: Generation, old: Generation | None) -> None:
    """The catalog half of a swap, in one transaction: `new` serves, `old` is retired (kept for
    the rollback window); the KB and its documents name the new collection and model; a
    re-chunking's chunk counts become the documents' (the old ones are kept with `old`, for a
    rollback), and its chunk sizes become the KB's."""
    with db.transaction() as conn:
        if old is not None:
            _keep_counts(conn, kb, old.generation)
            conn.execute(f"UPDATE collection_generations SET state = '{RETIRED}', retired_at = now(),"
                         " updated_at = now() WHERE kb = %s AND generation = %s", (kb, old.generation))
        conn.execute(f"UPDATE collection_generations SET state = '{SERVING}', serving_since = now(),"
                     " reason = NULL, updated_at = now() WHERE kb = %s AND generation = %s", (kb, new.generation))
        _point_documents_at(conn, kb, new)


def _keep_counts(conn, kb: str, generation: int) -> None:
    """Keep the documents' chunk counts with the generation that stops serving (for a rollback)."""
    conn.execute(
        "INSERT INTO generation_documents (kb, generation, object_key, status, chunk_count, token_count, sha256)"
        " SELECT kb, %s, object_key, status, chunk_count, token_count, sha256 FROM documents"
        " WHERE kb = %s AND status = 'ingested'"
        " ON CONFLICT (kb, generation, object_key) DO UPDATE SET chunk_count = EXCLUDED.chunk_count,"
        " token_count = EXCLUDED.token_count, sha256 = EXCLUDED.sha256, status = EXCLUDED.status,"
        " updated_at = now()",
        (generation, kb))


def _point_documents_at(conn, kb: str, gen: Generation) -> None:
    """Documents and the KB name `gen`'s collection and model; chunk counts from its per-document
    rows where it has them (a re-chunking, or a generation being served again)."""
    conn.execute(
        "UPDATE documents d SET chunk_count = g.chunk_count, token_count = g.token_count"
        " FROM generation_documents g WHERE g.kb = d.kb AND g.object_key = d.object_key"
        " AND g.kb = %s AND g.generation = %s AND d.status = 'ingested' AND g.status = 'ingested'"
        " AND g.sha256 IS NOT DISTINCT FROM d.sha256",
        (kb, gen.generation))
    conn.execute("UPDATE documents SET collection = %s, embedding_model = %s WHERE kb = %s AND status <> 'deleted'",
                 (gen.collection, gen.fingerprint, kb))
    chunking = {k: v for k, v in (gen.chunking or {}).items() if k.startswith("chunk_")}
    sizes = ", ".join(f"{k} = %({k})s" for k in chunking)
    conn.execute(f"UPDATE knowledge_bases SET collection = %(collection)s, embedding_model = %(model)s,"
                 f" {sizes + ', ' if sizes else ''}updated_at = now() WHERE name = %(kb)s",
                 {**chunking, "collection": gen.collection, "model": gen.fingerprint, "kb": kb})


def rollback_catalog(db: Database, kb: str, back: Generation, current: Generation) -> None:
    with db.transaction() as conn:
        _keep_counts(conn, kb, current.generation)
        conn.execute(f"UPDATE collection_generations SET state = '{RETIRED}', retired_at = now(),"
                     " updated_at = now() WHERE kb = %s AND generation = %s", (kb, current.generation))
        conn.execute(f"UPDATE collection_generations SET state = '{SERVING}', serving_since = now(),"
                     " retired_at = NULL, updated_at = now() WHERE kb = %s AND generation = %s",
                     (kb, back.generation))
        _point_documents_at(conn, kb, back)


def record_generation_documents(db: Database, kb: str, generation: int, rows: list[dict]) -> None:
    """Per-document outcomes of a re-chunking build (object_key, status, chunk_count,
    token_count, sha256, error_type, failure_reason), upserted."""
    if not rows:
        return
    with db.transaction() as conn:
        conn.cursor().executemany(
            "INSERT INTO generation_documents (kb, generation, object_key, status, chunk_count, token_count,"
            " sha256, error_type, failure_reason) VALUES (%(kb)s, %(generation)s, %(object_key)s, %(status)s,"
            " %(chunk_count)s, %(token_count)s, %(sha256)s, %(error_type)s, %(failure_reason)s)"
            " ON CONFLICT (kb, generation, object_key) DO UPDATE SET status = EXCLUDED.status,"
            " chunk_count = EXCLUDED.chunk_count, token_count = EXCLUDED.token_count, sha256 = EXCLUDED.sha256,"
            " error_type = EXCLUDED.error_type, failure_reason = EXCLUDED.failure_reason, updated_at = now()",
            [{"kb": kb, "generation": generation, "error_type": None, "failure_reason": None,
              "token_count": 0, "sha256": None, **row} for row in rows])


def forget_generation_documents(db: Database, kb: str, generation: int, keys: list[str]) -> None:
    if keys:
        with db.transaction() as conn:
            conn.execute("DELETE FROM generation_documents WHERE kb = %s AND generation = %s"
                         " AND object_key = ANY(%s)", (kb, generation, keys))


def generation_documents(db: Database, kb: str, generation: int) -> dict[str, dict]:
    with db.transaction() as conn:
        rows = conn.cursor(row_factory=dict_row).execute(
            "SELECT object_key, status, chunk_count, token_count, sha256, error_type, failure_reason"
            " FROM generation_documents WHERE kb = %s AND generation = %s", (kb, generation)).fetchall()
    return {row["object_key"]: row for row in rows}


def expected_chunk_counts(db: Database, gen: Generation) -> dict[str, int]:
    """document key -> the number of points `gen` must hold for it: every document the catalog
    holds as ingested, with the catalog's count (a copy keeps the chunks) or the count its
    re-chunking recorded (0 where it recorded none: the gate reports it missing)."""
    with db.transaction() as conn:
        if gen.mode == "rechunk":
            rows = conn.execute(
                "SELECT d.object_key, coalesce(g.chunk_count, -1) FROM documents d LEFT JOIN generation_documents g"
                " ON g.kb = d.kb AND g.object_key = d.object_key AND g.generation = %s AND g.status = 'ingested'"
                " WHERE d.kb = %s AND d.status = 'ingested'", (gen.generation, gen.kb)).fetchall()
        else:
            rows = conn.execute("SELECT object_key, chunk_count FROM documents WHERE kb = %s AND status = 'ingested'",
                                (gen.kb,)).fetchall()
    return dict(rows)


def retired_before(db: Database, cutoff: datetime) -> list[Generation]:
    """Generations past the rollback window (retired before `cutoff`) and failed builds
    older than it: the cleanup schedule drops their collections."""
    return _select(db, f"(state = '{RETIRED}' AND retired_at < %s) OR (state = '{FAILED}' AND updated_at < %s)",
                   (cutoff, cutoff), order="kb, generation")


def lock_key(db: Database, kb: str) -> str:
    return f"quivr-kb-writes:{db.schema}:{kb}"


@contextmanager
def kb_write_lock(db: Database, kb: str, exclusive: bool = False, timeout_seconds: float | None = None):
    """The KB's write lock (a PostgreSQL advisory lock, so it holds across processes and hosts):
    shared for a write to the serving collection, exclusive for a swap. On a connection of its
    own, held for the block; `timeout_seconds` bounds the wait (lock_timeout), else it waits."""
    fn = "pg_advisory_lock" if exclusive else "pg_advisory_lock_shared"
    with db.pool.connection() as conn:
        conn.autocommit = True
        if timeout_seconds is not None:
            conn.execute(f"SET lock_timeout = '{int(timeout_seconds * 1000)}ms'")
        try:
            conn.execute(f"SELECT {fn}(hashtextextended(%s, 0))", (lock_key(db, kb),))
        finally:
            if timeout_seconds is not None:
                conn.execute("SET lock_timeout = 0")
        try:
            yield
        finally:
            conn.execute(f"SELECT {fn.replace('lock', 'unlock', 1)}(hashtextextended(%s, 0))", (lock_key(db, kb),))
            conn.autocommit = False


@contextmanager
def kb_write_locks(db: Database, kbs: list[str], exclusive: bool = False, timeout_seconds: float | None = None):
    """Several KBs' write locks (as `kb_write_lock`) on one connection, taken in name order (two
    holders of overlapping sets cannot deadlock), released in reverse: a backup set holds every
    KB at once, for as long as its vector copies and its catalog snapshot take."""
    fn = "pg_advisory_lock" if exclusive else "pg_advisory_lock_shared"
    keys = [lock_key(db, kb) for kb in sorted(set(kbs))]
    taken: list[str] = []
    with db.pool.connection() as conn:
        conn.autocommit = True
        try:
            if timeout_seconds is not None:
                conn.execute(f"SET lock_timeout = '{int(timeout_seconds * 1000)}ms'")
            for key in keys:
                conn.execute(f"SELECT {fn}(hashtextextended(%s, 0))", (key,))
                taken.append(key)
            if timeout_seconds is not None:
                conn.execute("SET lock_timeout = 0")
            yield
        finally:
            for key in reversed(taken):
                conn.execute(f"SELECT {fn.replace('lock', 'unlock', 1)}(hashtextextended(%s, 0))", (key,))
            conn.execute("SET lock_timeout = 0")
            conn.autocommit = False
