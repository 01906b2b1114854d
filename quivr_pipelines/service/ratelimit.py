"""Rate limit of unauthenticated and invalid-key requests, per client address.

API keys have their own token bucket in PostgreSQL (`core/catalog/api_keys.py`), but a request
without a usable key has no key to charge. This limiter charges its client address instead:

- a request without credentials (no `Authorization`, no `X-API-Key`) spends a token up front;
- a request with credentials spends one when it is answered 401 (unknown, expired, revoked or
  malformed key, bad token), so valid keys never spend the address's budget;
- once an address has no token left, every request from it is answered 429 with `Retry-After`
  before any key is looked up: guessing keys costs no database work and cannot continue. (A
  valid key behind the same address, e.g. one NAT, waits too until the bucket refills; the
  budget only drains on failures, so this takes a misbehaving neighbour.)
- probes (`/health`, `/ready`, `/metrics`) are never limited.

The client address is `scope["client"]`: uvicorn runs with `proxy_headers`, so it is the
`X-Forwarded-For` address only when the peer is a trusted proxy (`FORWARDED_ALLOW_IPS`, default
127.0.0.1); anyone else's header is ignored. IPv6 addresses are counted per /64, the block one
host usually owns.

In process and bounded on purpose: a token bucket per address in an LRU cache with a TTL
(`caches.TTLCache`, at most QUIVR_ANON_RATE_LIMIT_CLIENTS entries; measured ~350 bytes an
address, 3.4 MB at the default 10,000 with 50,000 distinct addresses offered). An entry expires once its
bucket would have refilled anyway, so expiry loses nothing; only an LRU eviction under more
distinct addresses than the cache holds forgets a drained bucket. Each worker process keeps
its own buckets (N workers allow N times the rate); anonymous failures are cheap enough that a
shared bucket in PostgreSQL would cost more than it protects.
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
from collections.abc import Callable

from quivr_pipelines.service.caches import TTLCache

EXEMPT = ("/health", "/ready", "/metrics")


def client_key(address: str | None) -> str:
    """The bucket an address spends: itself, or its /64 for IPv6."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if ip.version == 6:
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is the IPv4 client a.b.c.d
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class AddressLimiter:
    """Token buckets per client address: `burst` at once, refilled at `per_minute` (0: no limit)."""

    def __init__(self, per_minute: float, burst: int, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        refill_seconds = self.burst / self.rate if self.rate else 1.0
        self._buckets = TTLCache(max_clients, refill_seconds)  # key -> (tokens, at)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key) or (self.burst, now)
        return min(self.burst, tokens + (now - at) * self.rate)

    def _wait(self, tokens: float) -> int:
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def blocked(self, address: str | None) -> int:
        """Seconds until the address may try again (0: it may now). Spends nothing."""
        if not self.rate:
            return 0
        tokens = self._tokens(client_key(address), self.clock())
        return 0 if tokens >= 1.0 else self._wait(tokens)

    def take(self, address: str | None) -> int:
        """Spend one token: 0 when there was one, else the seconds until there is."""
        if not self.rate:
            return 0
        key, now = client_key(address), self.clock()
        tokens = self._tokens(key, now)
        if tokens < 1.0:
            self._buckets.set(key, (tokens, now))
            return self._wait(tokens)
        self._buckets.set(key, (tokens - 1.0, now))
        return 0

    def __len__(self) -> int:
        return len(self._buckets)


def _has_credentials(headers: dict[bytes, bytes]) -> bool:
    return bool(headers.get(b"authorization", b"").strip() or headers.get(b"x-api-key", b"").strip())


class AnonymousRateLimitMiddleware:
    """Pure ASGI, inside CORS (so a browser can read its 429) and the request-context layer (so
    the 429 is logged and audited like any other answer)."""

    def __init__(self, app, *, limiter: AddressLimiter):
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path", "") in EXEMPT or not self.limiter.rate:
            return await self.app(scope, receive, send)
        client = scope.get("client")
        address = client[0] if client else None
        if _has_credentials(dict(scope.get("headers") or [])):
            wait = self.limiter.blocked(address)
            if wait:
                return await _too_many(send, wait)

            async def charge_failures(message):
                if message["type"] == "http.response.start" and message["status"] == 401:
                    self.limiter.take(address)
                await send(message)

            return await self.app(scope, receive, charge_failures)
        wait = self.limiter.take(address)
        if wait:
            return await _too_many(send, wait)
        return await self.app(scope, receive, send)


async def _too_many(send, wait: int) -> None:
    body = json.dumps({"detail": f"too many unauthenticated or failed requests from this address; retry in "
                                 f"{wait} s (QUIVR_ANON_RATE_LIMIT_PER_MINUTE)"}).encode()
    await send({"type": "http.response.start", "status": 429, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(wait).encode())]})
    await send({"type": "http.response.body", "body": body})
