"""API keys of the query service: create, list, revoke, and authenticate + rate-limit a request.

A key is `qvr_<43 url-safe chars>` (256 random bits). Only its SHA-256 is stored: a key this
long cannot be brute-forced, so a slow password hash would only add latency to every request.
Authentication and the per-key token bucket are ONE statement: the bucket lives in
PostgreSQL, so the limit holds across every worker process and every replica. Its commit does
not wait for the WAL flush (a lost bucket update is harmless), which keeps it sub-millisecond.

Capabilities beside the role: `evaluation` lets a key ask for `top_k` up to 100 (ordinary keys:
50), which retrieval evaluation needs to find 10 distinct documents among chunk hits; deeper
result lists cost more per request, so it is granted per key, not per role.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import dict_row

from quivr_pipelines.core.catalog.database import Database

ROLES = ("viewer", "editor", "admin")
KEY_PREFIX = "qvr_"


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    role: str
    kbs: tuple[str, ...] | None  # None: every KB
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    rate_limit_per_minute: float | None = None
    rate_limit_burst: int | None = None
    evaluation: bool = False

    def allows(self, kb: str) -> bool:
        return self.kbs is None or kb in self.kbs


@dataclass(frozen=True)
class AuthResult:
    key: ApiKey
    state: str  # active / expired / revoked
    allowed: bool  # False: rate limited
    retry_after_seconds: int = 0


def hash_key(raw: str) -> bytes:
    return hashlib.sha256(raw.encode("utf-8")).digest()


def _row_to_key(row: dict) -> ApiKey:
    return ApiKey(id=row["id"], name=row["name"], role=row["role"],
                  kbs=tuple(row["kbs"]) if row["kbs"] is not None else None,
                  created_at=row["created_at"], expires_at=row["expires_at"],
                  revoked_at=row["revoked_at"], rate_limit_per_minute=row["rate_limit_per_minute"],
                  rate_limit_burst=row["rate_limit_burst"], evaluation=bool(row.get("evaluation", False)))


def create_key(db: Database, name: str, role: str = "viewer", kbs: list[str] | None = None,
               expires_at: datetime | None = None, rate_limit_per_minute: float | None = None,
               rate_limit_burst: int | None = None, evaluation: bool = False) -> tuple[ApiKey, str]:
    """Returns the key record and the secret; the secret is shown once and never stored."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = "key_" + secrets.token_hex(6)
    with db.transaction() as conn:
        row = conn.cursor(row_factory=dict_row).execute(
            "INSERT INTO api_keys (id, key_hash, name, role, kbs, expires_at, rate_limit_per_minute,"
            " rate_limit_burst, evaluation) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
            (key_id, hash_key(raw), name, role, sorted(set(kbs)) if kbs else None, expires_at,
             rate_limit_per_minute, rate_limit_burst, evaluation),
        ).fetchone()
    return _row_to_key(row), raw


def list_keys(db: Database) -> list[ApiKey]:
    with db.transaction() as conn:
        rows = conn.cursor(row_factory=dict_row).execute(
            "SELECT * FROM api_keys ORDER BY created_at, id").fetchall()
    return [_row_to_key(row) for row in rows]


def revoke_key(db: Database, key_id: str) -> bool:
    """True when the key existed and was active; revoking twice keeps the first time."""
    with db.transaction() as conn:
        cur = conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
                           (key_id,))
        return cur.rowcount == 1


# The bucket holds at most `burst` tokens and refills at `rate` tokens per second; a request
# spends one. Missing bucket: created full minus this request. `now()` is the statement's time.
_AUTHENTICATE = """
WITH k AS (
    SELECT *, (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())) AS active,
           coalesce(rate_limit_per_minute, %(per_minute)s) / 60.0 AS rate,
           coalesce(rate_limit_burst, %(burst)s)::double precision AS burst
    FROM api_keys WHERE key_hash = %(hash)s
), b AS (
    INSERT INTO rate_limit_buckets AS r (key_id, tokens, refreshed_at, allowed)
    SELECT id, burst - 1, now(), burst >= 1 FROM k WHERE active AND rate > 0
    ON CONFLICT (key_id) DO UPDATE SET
        tokens = (SELECT CASE WHEN x.level >= 1 THEN x.level - 1 ELSE x.level END FROM (
            SELECT least(k.burst, r.tokens + extract(epoch FROM now() - r.refreshed_at) * k.rate) AS level
            FROM k) x),
        allowed = (SELECT least(k.burst, r.tokens + extract(epoch FROM now() - r.refreshed_at) * k.rate) >= 1
                   FROM k),
        refreshed_at = now()
    RETURNING key_id, tokens, allowed
)
SELECT k.*, b.tokens AS bucket_tokens, b.allowed AS bucket_allowed
FROM k LEFT JOIN b ON b.key_id = k.id
"""


def authenticate(db: Database, raw: str, per_minute: float, burst: int) -> AuthResult | None:
    """None: no such key. Rate limiting applies to active keys only (per_minute 0: off)."""
    with db.transaction() as conn:
        # A bucket update lost in a crash costs nothing: do not wait for the WAL flush (ms).
        conn.execute("SET LOCAL synchronous_commit TO OFF")
        row = conn.cursor(row_factory=dict_row).execute(
            _AUTHENTICATE, {"hash": hash_key(raw), "per_minute": float(per_minute), "burst": int(burst)}
        ).fetchone()
    if row is None:
        return None
    key = _row_to_key(row)
    if key.revoked_at is not None:
        return AuthResult(key, "revoked", allowed=True)
    if not row["active"]:
        return AuthResult(key, "expired", allowed=True)
    if row["bucket_allowed"] is False:
        missing = 1.0 - float(row["bucket_tokens"])
        retry = max(1, int(-(-missing // row["rate"]))) if row["rate"] > 0 else 60
        return AuthResult(key, "active", allowed=False, retry_after_seconds=retry)
    return AuthResult(key, "active", allowed=True)
