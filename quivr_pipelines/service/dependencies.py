"""Request dependencies: the service instance, the caller's API key (401/429) and KB access (403)."""

from __future__ import annotations

from fastapi import Depends, HTTPException, Path, Request

from quivr_pipelines.core.catalog import api_keys
from quivr_pipelines.core.catalog.api_keys import ApiKey
from quivr_pipelines.service.middleware import STATE_KEY
from quivr_pipelines.service.service import QueryService

BEARER = {"WWW-Authenticate": 'Bearer realm="quivr"'}
ROLE_RANK = {"viewer": 0, "editor": 1, "admin": 2}


def get_service(request: Request) -> QueryService:
    return request.app.state.service


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise HTTPException(401, "malformed Authorization header: expected 'Bearer <key>'", headers=BEARER)
        return value.strip()
    value = request.headers.get("x-api-key")
    return value.strip() if value and value.strip() else None


def require_key(request: Request, service: QueryService = Depends(get_service)) -> ApiKey:
    """One database round trip: the key's state and its token bucket (rate limit across workers)."""
    raw = _presented_key(request)
    if raw is None:
        raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                            headers=BEARER)
    settings = service.settings
    result = api_keys.authenticate(service.db, raw, settings.rate_limit_per_minute, settings.rate_limit_burst)
    if result is None:
        raise HTTPException(401, "invalid API key", headers=BEARER)
    request.scope.setdefault("state", {}).setdefault(STATE_KEY, {})["key_id"] = result.key.id
    if result.state == "revoked":
        raise HTTPException(401, f"API key {result.key.id} was revoked", headers=BEARER)
    if result.state == "expired":
        raise HTTPException(401, f"API key {result.key.id} expired at {result.key.expires_at.isoformat()}",
                            headers=BEARER)
    if not result.allowed:
        raise HTTPException(429, f"rate limit of API key {result.key.id} exceeded; retry in "
                                 f"{result.retry_after_seconds} s",
                            headers={"Retry-After": str(result.retry_after_seconds)})
    return result.key


def kb_reader(kb: str = Path(..., max_length=128), key: ApiKey = Depends(require_key)) -> ApiKey:
    """Every role may read; a key limited to some KBs gets 403 elsewhere (known KB or not)."""
    if ROLE_RANK.get(key.role, -1) < ROLE_RANK["viewer"]:
        raise HTTPException(403, f"role {key.role!r} may not query")
    if not key.allows(kb):
        raise HTTPException(403, f"API key {key.id} has no access to knowledge base {kb!r}")
    return key
