"""OAuth2 users: JWT bearer tokens of one OIDC issuer, verified against the issuer's JWKS.

PyJWT checks the signature and the registered claims (iss, aud, exp, nbf, iat, with a leeway).
What PyJWT's own `PyJWKClient` does not do is written here, in `JwksCache`:
- an unknown `kid` refetches the JWKS at most once per `QUIVR_OIDC_JWKS_MIN_REFRESH_SECONDS`
  (panva/jose's "cooldown"), so a flood of tokens with random kids costs the issuer one request;
- every fetch is bounded (connect/read timeout, a total deadline, a size cap) and a failed fetch
  is remembered for the same cooldown, so an unreachable issuer costs no request more than one
  timeout and the others an immediate 503 (`IssuerUnavailable`), never a hang;
- keys past their TTL keep verifying while a refresh fails (the issuer being down does not log
  everybody out); they are replaced as soon as a fetch succeeds.
The algorithm allow-list is checked on the header before any key is looked up, so `alg: none`
and HS* tokens never cost a fetch; only asymmetric keys (RSA, EC, OKP) from the JWKS are used
and a key's own `alg` must match the token's.

A verified token becomes a `Principal` whose id is `oidc:<sub>`: the audit row, the usage
ledger and the rate limit all key on it. Its rate limit is an in-process token bucket per
subject (`SubjectBuckets`), not the PostgreSQL one of API keys: that table's buckets belong to
rows of `api_keys` (a foreign key), and a subject has no row. With N workers or replicas a
subject may therefore make up to N times the per-process limit.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import jwt

from quivr_pipelines.core.catalog.api_keys import KEY_PREFIX, ROLES
from quivr_pipelines.core.events import event_logger
from quivr_pipelines.settings import oidc_fetch_url_problem

JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*$")
MAX_TOKEN_CHARS = 16_384
MAX_JWKS_BYTES = 1_048_576
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}


def looks_like_jwt(raw: str) -> bool:
    """Three base64url segments; this project's API keys (`qvr_...`) have no dot."""
    return not raw.startswith(KEY_PREFIX) and bool(JWT_SHAPE.match(raw))


class TokenInvalid(Exception):
    """401 with `error="invalid_token"`: the message is fixed text, never the token."""


class IssuerUnavailable(Exception):
    """503: no key can be had from the issuer now; retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Principal:
    id: str  # oidc:<sub>
    subject: str
    name: str
    role: str | None  # None: the token maps to no role of this service (403)
    kbs: tuple[str, ...] | None  # None: every KB
    issued_at: datetime | None
    expires_at: datetime


def claim(payload: dict, name: str):
    """A top-level claim by its full name first (Auth0's `https://x/roles` has dots), then a dotted
    path into nested objects (Keycloak's `realm_access.roles`)."""
    if name in payload:
        return payload[name]
    value = payload
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def claim_values(value) -> list[str]:
    """A list of strings, or one string of space/comma-separated values (like `scope`)."""
    if isinstance(value, str):
        return [v for v in re.split(r"[\s,]+", value) if v]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v]
    return []


def role_for(values: list[str], rules: tuple[tuple[str, str], ...]) -> str | None:
    """The highest role any value maps to; `*` maps every token (the fallback role)."""
    present = set(values)
    granted = [role for value, role in rules if value == "*" or value in present]
    return max(granted, key=ROLE_RANK.__getitem__, default=None)


class _FetchFailed(Exception):
    pass


class JwksCache:
    """The issuer's signing keys by kid. Thread-safe; one fetch at a time, made by the request
    that needs it (no background thread to own)."""

    def __init__(self, issuer: str, jwks_url: str | None, *, ttl_seconds: float, min_refresh_seconds: float,
                 timeout_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.issuer = issuer
        self.jwks_url = jwks_url  # None: discovered from the issuer's openid-configuration
        self.ttl = ttl_seconds
        self.min_refresh = min_refresh_seconds
        self.timeout = timeout_seconds
        self.clock = clock
        self._keys: dict[str | None, dict] | None = None
        self._fetched_at = -math.inf
        self._attempted_at = -math.inf
        self._failure: str | None = None
        self._lock = threading.Lock()
        self.fetches = 0
        self.log = event_logger()

    def key_for(self, kid: str | None) -> dict:
        found = self._cached(kid)
        if found is not None:
            return found
        # Only a cold cache waits for a fetch in progress (every token needs it). Otherwise the
        # request is answered from what is cached (a stale key, or an unknown kid), so a slow
        # issuer cannot park the request threads behind one fetch.
        if self._keys is None:
            acquired = self._lock.acquire(timeout=self.timeout * 2 + 1)
        else:
            acquired = self._lock.acquire(blocking=False)
        if not acquired:
            if self._keys is None:
                raise IssuerUnavailable("OIDC issuer keys are still being fetched; retry", retry_after=1)
            return self._without_fetch(kid)
        try:
            found = self._cached(kid)  # another request may have just fetched
            if found is not None:
                return found
            if self.clock() - self._attempted_at < self.min_refresh:
                return self._without_fetch(kid)
            try:
                self._fetch()
            except _FetchFailed as exc:
                self._failure = str(exc)
                self.log.warning("oidc_jwks_fetch_failed", issuer=self.issuer, error=str(exc),
                                 cached_keys=len(self._keys or {}))
            return self._without_fetch(kid)
        finally:
            self._lock.release()

    def _cached(self, kid: str | None) -> dict | None:
        keys = self._keys
        if keys is None or kid not in keys:
            return None
        now = self.clock()
        fresh = now - self._fetched_at < self.ttl
        # Past the TTL a key still serves while the last refresh failed within the cooldown.
        return keys[kid] if fresh or now - self._attempted_at < self.min_refresh else None

    def _without_fetch(self, kid: str | None) -> dict:
        """Decide from what is cached, with no request to the issuer."""
        if self._keys is not None and kid in self._keys:
            return self._keys[kid]
        retry = max(1, math.ceil(self.min_refresh - (self.clock() - self._attempted_at)))
        if self._failure is not None:
            state = "no signing keys cached" if self._keys is None else f"signing key {kid!r} not cached"
            raise IssuerUnavailable(f"OIDC issuer unreachable ({self._failure}); {state}", retry_after=retry)
        if kid is None:
            raise TokenInvalid(f"token has no kid and the issuer publishes {len(self._keys or {})} keys")
        raise TokenInvalid(f"signing key {kid[:64]!r} is not in the issuer's JWKS")

    def _fetch(self) -> None:
        now = self.clock()
        self._attempted_at = now
        self.fetches += 1
        deadline = time.monotonic() + self.timeout
        with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
            url = self.jwks_url or self._discover(client, deadline)
            document = _get_json(client, url, deadline)
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, list):
            raise _FetchFailed(f"{url} is not a JWKS (no 'keys' list)")
        usable = [k for k in keys if isinstance(k, dict) and k.get("kty") in ("RSA", "EC", "OKP")
                  and k.get("use", "sig") == "sig"]
        by_kid: dict[str | None, dict] = {k["kid"]: k for k in usable if isinstance(k.get("kid"), str)}
        if len(usable) == 1:
            by_kid[None] = usable[0]  # a token without kid may use the only key
        self.jwks_url = url
        self._keys, self._fetched_at, self._failure = by_kid, now, None
        self.log.info("oidc_jwks_fetched", issuer=self.issuer, url=url, keys=len(usable))

    def _discover(self, client: httpx.Client, deadline: float) -> str:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = _get_json(client, url, deadline)
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise _FetchFailed(f"{url} names another issuer than QUIVR_OIDC_ISSUER")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or oidc_fetch_url_problem(jwks_uri):
            raise _FetchFailed(f"{url} has no usable jwks_uri ({oidc_fetch_url_problem(str(jwks_uri))})")
        return jwks_uri


def _get_json(client: httpx.Client, url: str, deadline: float):
    """GET with a total deadline and a size cap (a slow-drip or huge answer cannot hold us)."""
    try:
        with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
            if response.status_code != 200:
                raise _FetchFailed(f"{url} answered HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise _FetchFailed(f"{url} answered more than {MAX_JWKS_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise _FetchFailed(f"{url} took longer than the timeout")
    except httpx.HTTPError as exc:
        raise _FetchFailed(f"{type(exc).__name__} from {url}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise _FetchFailed(f"{url} answered invalid JSON") from None


class SubjectBuckets:
    """A token bucket per subject, in this process; the least recently seen are dropped past
    `max_subjects` (a dropped bucket comes back full, which only ever allows more)."""

    def __init__(self, per_minute: float, burst: int, max_subjects: int = 100_000,
                 clock: Callable[[], float] = time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_subjects = max_subjects
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, subject: str) -> int:
        """0: allowed; otherwise the seconds to wait (Retry-After)."""
        if self.rate <= 0:
            return 0
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.pop(subject, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            allowed = tokens >= 1
            self._buckets[subject] = (tokens - 1 if allowed else tokens, now)
            while len(self._buckets) > self.max_subjects:
                self._buckets.popitem(last=False)
        return 0 if allowed else max(1, math.ceil((1 - tokens) / self.rate))


class OidcVerifier:
    """Everything the service needs to turn a bearer JWT into a Principal (see the module doc)."""

    def __init__(self, settings):
        self.settings = settings
        self.issuer: str = settings.oidc_issuer
        self.audience = [a.strip() for a in (settings.oidc_audience or "").split(",") if a.strip()]
        self.algorithms = settings.oidc_algorithm_list
        self.role_rules = settings.oidc_role_rules
        self.leeway = settings.oidc_leeway_seconds
        self.jwks = JwksCache(self.issuer, settings.oidc_jwks_url, ttl_seconds=settings.oidc_jwks_ttl_seconds,
                              min_refresh_seconds=settings.oidc_jwks_min_refresh_seconds,
                              timeout_seconds=settings.oidc_jwks_timeout_seconds)
        self.buckets = SubjectBuckets(settings.rate_limit_per_minute, settings.rate_limit_burst)

    def verify(self, raw: str) -> Principal:
        if len(raw) > MAX_TOKEN_CHARS:
            raise TokenInvalid(f"token longer than {MAX_TOKEN_CHARS} characters")
        try:
            header = jwt.get_unverified_header(raw)
        except jwt.InvalidTokenError:
            raise TokenInvalid("malformed token: not a JWS compact serialization") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self.algorithms:
            raise TokenInvalid(f"token algorithm {str(alg)[:16]!r} is not allowed "
                               f"(QUIVR_OIDC_ALGORITHMS: {', '.join(self.algorithms)})")
        if kid is not None and (not isinstance(kid, str) or len(kid) > 256):
            raise TokenInvalid("token kid must be a string of at most 256 characters")
        jwk = self.jwks.key_for(kid)
        if jwk.get("alg") not in (None, alg):
            raise TokenInvalid(f"signing key {kid!r} is for {jwk.get('alg')!r}, the token says {alg!r}")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
        except jwt.PyJWKError:
            raise TokenInvalid(f"signing key {kid!r} cannot verify {alg!r}") from None
        payload = self._decode(raw, key, alg)
        return self._principal(payload)

    def _decode(self, raw: str, key: jwt.PyJWK, alg: str) -> dict:
        try:
            return jwt.decode(raw, key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                              leeway=self.leeway, options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError:
            raise TokenInvalid("token expired (exp)") from None
        except jwt.ImmatureSignatureError as exc:
            raise TokenInvalid(f"token not yet valid ({'iat' if 'iat' in str(exc) else 'nbf'})") from None
        except jwt.InvalidIssuerError:
            raise TokenInvalid("token issuer (iss) is not QUIVR_OIDC_ISSUER") from None
        except jwt.InvalidAudienceError:
            raise TokenInvalid("token audience (aud) does not include QUIVR_OIDC_AUDIENCE") from None
        except jwt.InvalidSignatureError:
            raise TokenInvalid("token signature does not verify with the issuer's key") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenInvalid(f"token has no {exc.claim!r} claim") from None
        except (jwt.InvalidTokenError, jwt.PyJWKError, ValueError, TypeError) as exc:
            raise TokenInvalid(f"invalid token ({type(exc).__name__})") from None

    def _principal(self, payload: dict) -> Principal:
        sub = payload["sub"]
        if not isinstance(sub, str) or not sub or len(sub) > 255:
            raise TokenInvalid("token sub must be a string of 1 to 255 characters")
        role = role_for(claim_values(claim(payload, self.settings.oidc_role_claim)), self.role_rules)
        prefix = self.settings.oidc_kbs_prefix
        kbs = [v[len(prefix):] for v in claim_values(claim(payload, self.settings.oidc_kbs_claim))
               if v.startswith(prefix) and len(v) > len(prefix)]
        name = next((payload[c] for c in ("preferred_username", "email", "name")
                     if isinstance(payload.get(c), str)), sub)
        iat = payload.get("iat")
        return Principal(id=f"oidc:{sub}", subject=sub, name=name[:255], role=role,
                         kbs=None if "*" in kbs else tuple(sorted(set(kbs))),
                         issued_at=_when(iat, "iat") if iat is not None else None,
                         expires_at=_when(payload["exp"], "exp"))


def _when(value, name: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (OverflowError, OSError, ValueError, TypeError):
        raise TokenInvalid(f"token {name} is not a usable time") from None
