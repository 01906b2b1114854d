"""Request dependencies: the service instance, the caller (401/429/503) and KB access (403).

The caller is an API key or, with QUIVR_OIDC_ISSUER set, an OIDC user presenting a JWT (told
apart by shape: three base64url segments, never the `qvr_` prefix of API keys). Both become an
`ApiKey` record (a JWT user's id is `oidc:<sub>`), so KB authorization, the audit row's key id
and the usage ledger treat them alike.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from fastapi import Depends, HTTPException, Path, Request

from quivr_pipelines.core.catalog import api_keys
from quivr_pipelines.core.catalog.api_keys import ApiKey
from quivr_pipelines.service import oidc
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
    """An API key costs one database round trip: its state and its token bucket (rate limit
    across workers). A JWT (with OIDC configured) costs none: the JWKS is cached in process."""
    raw = _presented_key(request)
    if raw is None:
        raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                            headers=BEARER)
    settings = service.settings
    if settings.oidc_issuer and oidc.looks_like_jwt(raw):
        return _require_oidc_user(request, raw, _verifier(request, settings))
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
        who = "OIDC user" if key.id.startswith("oidc:") else "API key"
        raise HTTPException(403, f"{who} {key.id} has no access to knowledge base {kb!r}")
    return key


_VERIFIER_LOCK = threading.Lock()


def _verifier(request: Request, settings) -> oidc.OidcVerifier:
    """One verifier (JWKS cache, subject buckets) per app and settings, made on first use: the
    service starts, and serves API keys, with the issuer down."""
    verifier = getattr(request.app.state, "oidc", None)
    if verifier is None or verifier.settings is not settings:
        with _VERIFIER_LOCK:
            verifier = getattr(request.app.state, "oidc", None)
            if verifier is None or verifier.settings is not settings:
                verifier = request.app.state.oidc = oidc.OidcVerifier(settings)
    return verifier


def _require_oidc_user(request: Request, raw: str, verifier: oidc.OidcVerifier) -> ApiKey:
    """401 names what failed (RFC 6750 `error="invalid_token"`); 503 + Retry-After when the
    issuer's keys cannot be had; 403 for a valid token that maps to no role; 429 per subject."""
    try:
        user = verifier.verify(raw)
    except oidc.TokenInvalid as exc:
        detail = str(exc).replace('"', "'").replace("\\", "/")
        raise HTTPException(401, f"invalid bearer token: {exc}", headers={
            "WWW-Authenticate": f'Bearer realm="quivr", error="invalid_token", error_description="{detail}"'
        }) from None
    except oidc.IssuerUnavailable as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
    request.scope.setdefault("state", {}).setdefault(STATE_KEY, {})["key_id"] = user.id
    if user.role is None:
        raise HTTPException(403, f"token of {user.id} maps to no role (claim "
                                 f"{verifier.settings.oidc_role_claim!r}, QUIVR_OIDC_ROLE_MAP)")
    retry = verifier.buckets.take(user.id)
    if retry:
        raise HTTPException(429, f"rate limit of {user.id} exceeded; retry in {retry} s",
                            headers={"Retry-After": str(retry)})
    return ApiKey(id=user.id, name=user.name, role=user.role, kbs=user.kbs,
                  created_at=user.issued_at or datetime.now(UTC), expires_at=user.expires_at, revoked_at=None)
