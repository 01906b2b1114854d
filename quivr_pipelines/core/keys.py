"""Names and identifiers: KB names, object keys, Dagster partition keys and Qdrant point ids.

Point ids are uuid5 of (KB, object key, chunk index): re-running any ingestion writes the same
ids, so writes are idempotent and a document's chunks can be found without a lookup table.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from urllib.parse import quote, unquote

from quivr_pipelines.core.errors import IngestionError

KB_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
POINT_NAMESPACE = uuid.UUID("5f1c7a4e-8e8b-4f43-9d43-6a1f0b1c2d3e")
MAX_OBJECT_KEY_BYTES = 1024  # S3's own limit


def validate_kb_name(name: str) -> str:
    if not KB_NAME_PATTERN.match(name):
        raise ValueError(
            f"invalid knowledge base name {name!r}: use 1-63 characters a-z, 0-9, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def check_object_key(key: str) -> str:
    """Reject keys that could escape a store root or confuse a shell, a log or a filesystem."""
    if not key:
        raise IngestionError("hostile_key", "empty object key")
    if len(key.encode("utf-8")) > MAX_OBJECT_KEY_BYTES:
        raise IngestionError("hostile_key", f"object key longer than {MAX_OBJECT_KEY_BYTES} bytes")
    if any(unicodedata.category(ch) == "Cc" for ch in key):
        raise IngestionError("hostile_key", "object key contains control characters")
    if key.startswith("/") or key.startswith("\\") or re.match(r"^[A-Za-z]:", key):
        raise IngestionError("hostile_key", "object key is an absolute path")
    parts = re.split(r"[/\\]", key)
    if any(part in ("..", ".") for part in parts):
        raise IngestionError("hostile_key", "object key contains '.' or '..' path segments")
    if any(part == "" for part in parts):
        raise IngestionError("hostile_key", "object key contains an empty path segment")
    return key


def partition_key(kb: str, object_key: str) -> str:
    """`<kb>/<escaped key>`: reversible, and free of what Dagster forbids in partition keys
    (commas, brackets, '...', control characters)."""
    escaped = quote(object_key, safe="/-_.~ ()@+=")
    escaped = escaped.replace("..", "%2E%2E")
    return f"{kb}/{escaped}"


def split_partition_key(key: str) -> tuple[str, str]:
    kb, _, escaped = key.partition("/")
    return kb, unquote(escaped)


def point_id(kb: str, object_key: str, chunk_index: int) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, f"{kb}\x1f{object_key}\x1f{chunk_index}"))
