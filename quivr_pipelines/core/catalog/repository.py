"""Catalog reads and writes: knowledge bases, documents, the usage ledger, the embedding cache.

Every write is an upsert keyed by its natural key, so retrying any step converges.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from quivr_pipelines.core.catalog.database import Database
from quivr_pipelines.core.errors import DocumentStatus, ErrorType
from quivr_pipelines.core.pii import PiiMode

# Status values inside SQL text come from `DocumentStatus` (constants, never user input).
_INGESTED, _PENDING, _DELETED = DocumentStatus.INGESTED, DocumentStatus.PENDING, DocumentStatus.DELETED
_FAILED, _SKIPPED = DocumentStatus.FAILED, DocumentStatus.SKIPPED


@dataclass(frozen=True)
class KbConfig:
    name: str
    chunk_max_characters: int
    chunk_new_after_characters: int
    chunk_combine_under_characters: int
    chunk_overlap_characters: int
    collection: str | None = None
    embedding_model: str | None = None
    pii: str = "off"  # PiiMode: off / detect / mask (core/pii.py)


CHUNK_SIZE_FIELDS = ("chunk_max_characters", "chunk_new_after_characters",
                     "chunk_combine_under_characters", "chunk_overlap_characters")


def default_kb_config(source) -> KbConfig:
    """The chunk sizes and PII mode a new KB starts with, read by name from `source` (the
    Settings, or the Dagster parser resource: both carry the same fields)."""
    return KbConfig(name="", **{name: getattr(source, name) for name in CHUNK_SIZE_FIELDS},
                    pii=str(getattr(source, "pii", "off")))


@dataclass(frozen=True)
class DocumentRecord:
    """What the pipeline learned about one document; written in one upsert."""

    kb: str
    object_key: str
    status: DocumentStatus
    etag: str | None = None
    version_id: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    content_type: str | None = None
    source_uri: str | None = None
    error_type: ErrorType | None = None
    failure_reason: str | None = None
    page_count: int | None = None
    element_count: int | None = None
    chunk_count: int = 0
    token_count: int = 0
    parse_seconds: float | None = None
    embed_seconds: float | None = None
    write_seconds: float | None = None
    total_seconds: float | None = None
    collection: str | None = None
    embedding_model: str | None = None
    dagster_run_id: str | None = None
    pii_mode: str = "off"  # the KB's PII mode this outcome was produced with
    pii_entities: dict[str, int] | None = None  # entity type -> occurrences (detect, mask)
    pii_seconds: float | None = None
    pages_with_text: int | None = None  # PDFs: pages with text of page_count
    unread_pages: int = 0  # PDFs: pages no reader could read; the document is ingested with `warning`
    warning: str | None = None  # what an ingested document lacks (unread pages), shown with the problems


def ensure_kb(db: Database, kb: str, defaults: KbConfig) -> KbConfig:
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO knowledge_bases (name, chunk_max_characters, chunk_new_after_characters,"
            " chunk_combine_under_characters, chunk_overlap_characters, pii)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
            (kb, defaults.chunk_max_characters, defaults.chunk_new_after_characters,
             defaults.chunk_combine_under_characters, defaults.chunk_overlap_characters, defaults.pii),
        )
    return get_kb(db, kb)


def get_kb(db: Database, kb: str) -> KbConfig:
    with db.transaction() as conn:
        cur = conn.cursor(row_factory=dict_row)
        row = cur.execute(
            "SELECT name, chunk_max_characters, chunk_new_after_characters,"
            " chunk_combine_under_characters, chunk_overlap_characters, collection, embedding_model, pii"
            " FROM knowledge_bases WHERE name = %s",
            (kb,),
        ).fetchone()
    if row is None:
        raise KeyError(kb)
    return KbConfig(**row)


def configure_kb(db: Database, kb: str, **sizes: int | str) -> KbConfig:
    """Chunk sizes apply to documents ingested from now on; a new `pii` mode makes the next sync
    ingest the KB's documents again (their `pii_mode` no longer matches)."""
    allowed = {"chunk_max_characters", "chunk_new_after_characters",
               "chunk_combine_under_characters", "chunk_overlap_characters", "pii"}
    updates = {k: v for k, v in sizes.items() if v is not None}
    if not updates:
        return get_kb(db, kb)
    if set(updates) - allowed:
        raise ValueError(f"unknown KB settings: {sorted(set(updates) - allowed)}")
    if "pii" in updates:
        updates["pii"] = str(PiiMode(updates["pii"]))  # ValueError for anything else
    assignments = ", ".join(f"{column} = %({column})s" for column in updates)
    with db.transaction() as conn:
        conn.execute(
            f"UPDATE knowledge_bases SET {assignments}, updated_at = now() WHERE name = %(kb)s",
            {**updates, "kb": kb},
        )
    return get_kb(db, kb)


def set_kb_collection(db: Database, kb: str, collection: str, embedding_model: str) -> None:
    with db.transaction() as conn:
        conn.execute(
            "UPDATE knowledge_bases SET collection = %s, embedding_model = %s, updated_at = now()"
            " WHERE name = %s AND (collection IS DISTINCT FROM %s OR embedding_model IS DISTINCT FROM %s)",
            (collection, embedding_model, kb, collection, embedding_model),
        )


def get_documents(db: Database, kb: str, keys: Sequence[str] | None = None) -> dict[str, dict]:
    with db.transaction() as conn:
        cur = conn.cursor(row_factory=dict_row)
        if keys is None:
            rows = cur.execute("SELECT * FROM documents WHERE kb = %s", (kb,)).fetchall()
        else:
            rows = cur.execute(
                "SELECT * FROM documents WHERE kb = %s AND object_key = ANY(%s)", (kb, list(keys))
            ).fetchall()
    return {row["object_key"]: row for row in rows}


def get_documents_in_range(db: Database, kb: str, after: str | None, upto: str | None) -> dict[str, dict]:
    """Documents with `after < key <= upto` in byte order (either bound open when None)."""
    with db.transaction() as conn:
        cur = conn.cursor(row_factory=dict_row)
        rows = cur.execute(
            "SELECT object_key, status, etag, size_bytes, error_type, embedding_model,"
            " requested_etag, requested_at, missing_passes, pii_mode FROM documents WHERE kb = %(kb)s"
            " AND (%(after)s::text IS NULL OR object_key COLLATE \"C\" > %(after)s::text COLLATE \"C\")"
            " AND (%(upto)s::text IS NULL OR object_key COLLATE \"C\" <= %(upto)s::text COLLATE \"C\")",
            {"kb": kb, "after": after, "upto": upto},
        ).fetchall()
    return {row["object_key"]: row for row in rows}


def count_missing(db: Database, kb: str, missing: Sequence[str], seen_again: Sequence[str]) -> dict[str, int]:
    """One more missed pass for `missing`, a clean slate for `seen_again`; returns the counts."""
    with db.transaction() as conn:
        if seen_again:
            conn.execute("UPDATE documents SET missing_passes = 0 WHERE kb = %s AND object_key = ANY(%s)",
                         (kb, list(seen_again)))
        if not missing:
            return {}
        rows = conn.execute(
            "UPDATE documents SET missing_passes = missing_passes + 1 WHERE kb = %s AND object_key = ANY(%s)"
            " RETURNING object_key, missing_passes",
            (kb, list(missing)),
        ).fetchall()
    return dict(rows)


_DOCUMENT_COLUMNS = [
    "etag", "version_id", "sha256", "size_bytes", "content_type", "source_uri", "status",
    "error_type", "failure_reason", "page_count", "element_count", "chunk_count", "token_count",
    "parse_seconds", "embed_seconds", "write_seconds", "total_seconds", "collection",
    "embedding_model", "dagster_run_id", "pii_mode", "pii_entities", "pii_seconds",
    "pages_with_text", "unread_pages", "warning",
]


def record_documents(db: Database, records: Iterable[DocumentRecord]) -> None:
    columns = ", ".join(_DOCUMENT_COLUMNS)
    placeholders = ", ".join(f"%({c})s" for c in _DOCUMENT_COLUMNS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _DOCUMENT_COLUMNS)
    sql = (
        f"INSERT INTO documents (kb, object_key, {columns}, ingested_at)"
        f" VALUES (%(kb)s, %(object_key)s, {placeholders},"
        f"  CASE WHEN %(status)s = '{_INGESTED}' THEN now() END)"
        f" ON CONFLICT (kb, object_key) DO UPDATE SET {updates},"
        f"  ingested_at = CASE WHEN EXCLUDED.status = '{_INGESTED}' THEN now()"
        "                ELSE documents.ingested_at END,"
        "  updated_at = now()"
    )
    params = [{**record.__dict__, "pii_entities": Jsonb(record.pii_entities) if record.pii_entities is not None
               else None} for record in records]
    if not params:
        return
    with db.transaction() as conn:
        conn.cursor().executemany(sql, params)


def mark_requested(db: Database, kb: str, etags: dict[str, str]) -> None:
    """Remember that a run was requested for these (key, etag) pairs; creates pending rows."""
    if not etags:
        return
    with db.transaction() as conn:
        conn.cursor().executemany(
            "INSERT INTO documents (kb, object_key, status, requested_etag, requested_at)"
            f" VALUES (%s, %s, '{_PENDING}', %s, now())"
            " ON CONFLICT (kb, object_key) DO UPDATE SET requested_etag = EXCLUDED.requested_etag,"
            " requested_at = now()",
            [(kb, key, etag) for key, etag in etags.items()],
        )


def reset_to_pending(db: Database, kb: str, keys: Sequence[str]) -> None:
    """Forget what was ingested so that the next sync ingests these documents again."""
    if not keys:
        return
    with db.transaction() as conn:
        conn.execute(
            f"UPDATE documents SET status = '{_PENDING}', etag = NULL, sha256 = NULL, requested_etag = NULL,"
            " updated_at = now() WHERE kb = %s AND object_key = ANY(%s)",
            (kb, list(keys)),
        )


def mark_deleted(db: Database, kb: str, keys: Sequence[str]) -> None:
    with db.transaction() as conn:
        conn.execute(
            f"UPDATE documents SET status = '{_DELETED}', chunk_count = 0, missing_passes = 0,"
            " requested_etag = NULL, deleted_at = now(), updated_at = now()"
            " WHERE kb = %s AND object_key = ANY(%s)",
            (kb, list(keys)),
        )


def confirmed_missing(db: Database, kb: str, min_passes: int) -> list[str]:
    with db.transaction() as conn:
        rows = conn.execute(
            f"SELECT object_key FROM documents WHERE kb = %s AND status <> '{_DELETED}'"
            " AND missing_passes >= %s ORDER BY object_key",
            (kb, min_passes),
        ).fetchall()
    return [row[0] for row in rows]


def kb_names(db: Database) -> list[str]:
    with db.transaction() as conn:
        return [row[0] for row in conn.execute("SELECT name FROM knowledge_bases ORDER BY name")]


def kb_status(db: Database) -> list[dict]:
    with db.transaction() as conn:
        cur = conn.cursor(row_factory=dict_row)
        return cur.execute(
            "SELECT k.name AS kb, k.collection, k.embedding_model,"
            f" count(d.object_key) FILTER (WHERE d.status = '{_INGESTED}') AS ingested,"
            f" count(d.object_key) FILTER (WHERE d.status = '{_FAILED}') AS failed,"
            f" count(d.object_key) FILTER (WHERE d.status = '{_SKIPPED}') AS skipped,"
            f" count(d.object_key) FILTER (WHERE d.status = '{_DELETED}') AS deleted,"
            f" count(d.object_key) FILTER (WHERE d.status = '{_PENDING}') AS pending,"
            f" count(d.object_key) FILTER (WHERE d.status = '{_INGESTED}' AND d.warning IS NOT NULL) AS warned,"
            f" coalesce(sum(d.chunk_count) FILTER (WHERE d.status = '{_INGESTED}'), 0) AS chunks,"
            f" coalesce(sum(d.token_count) FILTER (WHERE d.status = '{_INGESTED}'), 0) AS tokens,"
            " max(d.ingested_at) AS last_ingestion"
            " FROM knowledge_bases k LEFT JOIN documents d ON d.kb = k.name"
            " GROUP BY k.name, k.collection, k.embedding_model ORDER BY k.name"
        ).fetchall()


def failures(db: Database, kb: str) -> list[dict]:
    """Failed and skipped documents, and ingested ones with a warning (unread pages: error type
    `unread_pages`, the warning as the reason)."""
    with db.transaction() as conn:
        cur = conn.cursor(row_factory=dict_row)
        return cur.execute(
            "SELECT object_key, status,"
            f" CASE WHEN status = '{_INGESTED}' THEN 'unread_pages' ELSE error_type END AS error_type,"
            f" CASE WHEN status = '{_INGESTED}' THEN warning ELSE failure_reason END AS failure_reason"
            f" FROM documents WHERE kb = %s AND (status IN ('{_FAILED}', '{_SKIPPED}')"
            f" OR (status = '{_INGESTED}' AND warning IS NOT NULL)) ORDER BY object_key",
            (kb,),
        ).fetchall()


def record_usage(db: Database, *, kind: str, provider: str, model: str, kb: str | None,
                 prompt_tokens: int, inputs: int, cached_inputs: int = 0,
                 completion_tokens: int = 0, dagster_run_id: str | None = None,
                 api_key_id: str | None = None) -> None:
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO usage_ledger (kind, provider, model, kb, prompt_tokens, completion_tokens,"
            " inputs, cached_inputs, dagster_run_id, api_key_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (kind, provider, model, kb, prompt_tokens, completion_tokens, inputs, cached_inputs,
             dagster_run_id, api_key_id),
        )


def cached_embeddings(db: Database, model: str, digests: Sequence[bytes]) -> dict[bytes, np.ndarray]:
    if not digests:
        return {}
    with db.transaction() as conn:
        rows = conn.execute(
            "SELECT text_sha256, vector FROM embedding_cache WHERE model = %s AND text_sha256 = ANY(%s)",
            (model, list(digests)),
        ).fetchall()
    return {bytes(digest): np.frombuffer(vector, dtype=np.float32) for digest, vector in rows}


def store_embeddings(db: Database, model: str, items: Sequence[tuple[bytes, np.ndarray]]) -> None:
    if not items:
        return
    with db.transaction() as conn:
        conn.cursor().executemany(
            "INSERT INTO embedding_cache (model, text_sha256, vector) VALUES (%s, %s, %s)"
            " ON CONFLICT (model, text_sha256) DO NOTHING",
            [(model, digest, np.asarray(vec, dtype=np.float32).tobytes()) for digest, vec in items],
        )
