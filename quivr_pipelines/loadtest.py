"""Load tester for the query service: bounded scenarios, latency percentiles, errors by status.

Scenarios (every one stops at `requests` sent or `duration` seconds, whichever comes first;
requests in flight then finish or hit `timeout`, so a run always ends):

- `steady`: `concurrency` users, each sending one search after another;
- `peak`: users join one by one over the ramp-up (a quarter of the duration), all of them hold
  (half), then leave one by one (the last quarter); the load peaks at `concurrency`;
- `mix`: like steady, each request drawn by weight from simple searches, complex searches
  (filters, larger top_k, dense/sparse modes), asks and streaming asks.

Latency is measured per request from send to the last byte (for streams: to `event: done`);
streaming asks also report the time to the first token. Percentiles are nearest-rank over the
successful requests. A 429 is a failure, counted under its status and in `rate_limited`
(with how many carried Retry-After); it is never retried. The API key is sent in the
Authorization header and never printed or written to the report.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx

SCENARIOS = ("steady", "peak", "mix")
KINDS = ("search", "complex", "ask", "stream")
DEFAULT_WEIGHTS = {"search": 5, "complex": 2, "ask": 2, "stream": 1}
API_KEY_ENV = "QUIVR_LOADTEST_API_KEY"
DEFAULT_QUERIES = Path(__file__).resolve().parents[2] / "shared" / "data" / "retrieval" / "xquad_en" / "qa.jsonl"
BUILTIN_QUERIES = [
    "How are deleted documents handled?",
    "What is the parental leave policy?",
    "Which file formats can be ingested?",
    "How many points did the Panthers defense surrender?",
    "What does the embedding cache store?",
    "When is the HNSW index built?",
    "Who holds the embedded vector store lock?",
    "What happens to an encrypted PDF?",
    "How often does the sensor list the bucket?",
    "What is reciprocal rank fusion?",
    "How are chunk sizes configured per knowledge base?",
    "Which statins were studied for breast cancer survival?",
]
# Complex searches: larger top_k, a filter, sometimes another mode (field names of SearchFilter).
COMPLEX_SEARCHES = [
    {"top_k": 20, "mode": "hybrid", "filters": {"content_types": ["text/plain", "application/pdf"]}},
    {"top_k": 50, "mode": "hybrid", "filters": {"ingested_after": "2020-01-01T00:00:00Z"}},
    {"top_k": 20, "mode": "dense", "filters": {"ingested_before": "2100-01-01T00:00:00Z"}},
    {"top_k": 30, "mode": "sparse"},
]


class LoadTestError(ValueError):
    """A bad option: refused before any request is sent."""


@dataclass
class LoadTestConfig:
    url: str
    kb: str
    api_key: str | None = field(default=None, repr=False)
    scenario: str = "steady"
    concurrency: int = 4
    requests: int = 200
    duration: float = 60.0
    timeout: float = 30.0
    top_k: int = 5
    mode: str = "hybrid"
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    queries: list[str] = field(default_factory=list)
    seed: int = 0

    def validate(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LoadTestError(f"--url must be an http(s) URL with a host, got {self.url!r}")
        if self.scenario not in SCENARIOS:
            raise LoadTestError(f"unknown scenario {self.scenario!r} (expected one of {', '.join(SCENARIOS)})")
        if self.concurrency < 1 or self.requests < 1:
            raise LoadTestError("--concurrency and --requests must be at least 1")
        if not (0 < self.duration < math.inf) or not (0 < self.timeout < math.inf):
            raise LoadTestError("--duration and --timeout must be positive and finite")
        if self.mode not in ("hybrid", "dense", "sparse") or not 1 <= self.top_k <= 50:
            raise LoadTestError("--mode takes hybrid, dense or sparse and --top-k 1..50")
        unknown = set(self.weights) - set(KINDS)
        if unknown or not self.weights or any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise LoadTestError(f"weights take kinds {', '.join(KINDS)} with non-negative values, got {self.weights}")
        if not self.queries:
            raise LoadTestError("no queries to send")


@dataclass
class Sample:
    kind: str
    status: str  # HTTP status code as text, or timeout / connection_error / stream_error / ...
    ok: bool
    latency_ms: float
    ttft_ms: float | None = None
    retry_after: bool = False
    request_id: bool = False
    took_ms: float | None = None  # searches: the service's own `took_ms`
    cached: bool | None = None


# -- options -----------------------------------------------------------------------------------
def load_queries(path: str | Path | None) -> list[str]:
    """Lines of a text file, or the `question`/`query`/`text` field of each JSONL row."""
    if path is None:
        if not DEFAULT_QUERIES.exists():
            return list(BUILTIN_QUERIES)
        path = DEFAULT_QUERIES
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            row = json.loads(line)
            line = next((row[k] for k in ("question", "query", "text") if isinstance(row.get(k), str)), "")
        if line:
            out.append(line)
    if not out:
        raise LoadTestError(f"no queries found in {path}")
    return out


def parse_weights(text: str | None) -> dict[str, float]:
    """`search=5,complex=2,ask=2,stream=1` (kinds left out get 0 when any is given)."""
    if not text:
        return dict(DEFAULT_WEIGHTS)
    weights = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise LoadTestError(f"bad weight {part!r} (expected kind=number)") from None
    return weights


# -- requests ----------------------------------------------------------------------------------
class _Plan:
    """Hands out request tickets (the --requests budget) and the next query."""

    def __init__(self, config: LoadTestConfig, deadline: float):
        self.config, self.deadline = config, deadline
        self.sent = 0
        self.rng = random.Random(config.seed)
        self.queries = list(config.queries)
        self.rng.shuffle(self.queries)
        kinds = ["search"] if config.scenario != "mix" else [k for k in KINDS if config.weights.get(k, 0) > 0]
        self.kinds, self.kind_weights = kinds, [config.weights.get(k, 1) for k in kinds]
        self.stopped_by: str | None = None

    def next(self) -> tuple[str, str, int] | None:
        if time.monotonic() >= self.deadline:
            self.stopped_by = self.stopped_by or "duration"
            return None
        if self.sent >= self.config.requests:
            self.stopped_by = self.stopped_by or "requests"
            return None
        n = self.sent
        self.sent += 1
        kind = self.kinds[0] if len(self.kinds) == 1 else self.rng.choices(self.kinds, self.kind_weights)[0]
        return kind, self.queries[n % len(self.queries)], n


def _body(config: LoadTestConfig, kind: str, query: str, n: int) -> tuple[str, dict]:
    body = {"query": query, "top_k": config.top_k, "mode": config.mode}
    if kind == "complex":
        body.update(COMPLEX_SEARCHES[n % len(COMPLEX_SEARCHES)])
    if kind in ("ask", "stream"):
        return "ask", {**body, "stream": kind == "stream"}
    return "search", body


async def _stream(response: httpx.Response, started: float) -> tuple[bool, str, float | None]:
    """Read an SSE answer: ok when `event: done` arrives, the time to the first token."""
    ttft, event = None, None
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
            if event == "token" and ttft is None:
                ttft = (time.perf_counter() - started) * 1000
            elif event == "done":
                return True, str(response.status_code), ttft
            elif event == "error":
                return False, "stream_error", ttft
    return False, "stream_incomplete", ttft


async def _send(client: httpx.AsyncClient, config: LoadTestConfig, kind: str, query: str, n: int) -> Sample:
    action, body = _body(config, kind, query, n)
    path = f"/v1/kbs/{quote(config.kb, safe='')}/{action}"
    started = time.perf_counter()
    ttft, took_ms, cached = None, None, None
    try:
        async with asyncio.timeout(config.timeout):
            async with client.stream("POST", path, json=body) as response:
                code = response.status_code
                headers = response.headers
                if kind == "stream" and code == 200:
                    ok, status, ttft = await _stream(response, started)
                else:
                    await response.aread()
                    ok, status = 200 <= code < 300, str(code)
                    if ok and action == "search":
                        took_ms, cached = _server_side(response)
    except (TimeoutError, httpx.TimeoutException):
        return Sample(kind, "timeout", False, (time.perf_counter() - started) * 1000)
    except httpx.HTTPError as exc:
        name = "connection_error" if isinstance(exc, (httpx.ConnectError, httpx.RemoteProtocolError)) else type(exc).__name__
        return Sample(kind, name, False, (time.perf_counter() - started) * 1000)
    return Sample(kind, status, ok, (time.perf_counter() - started) * 1000, ttft,
                  retry_after="retry-after" in headers, request_id="x-request-id" in headers,
                  took_ms=took_ms, cached=cached)


def _server_side(response: httpx.Response) -> tuple[float | None, bool | None]:
    """A search answer's own `took_ms` (time inside the service) and `cached` flag."""
    try:
        body = response.json()
        return float(body["took_ms"]), bool(body.get("cached"))
    except (ValueError, KeyError, TypeError):
        return None, None


# -- scenarios ---------------------------------------------------------------------------------
def _user_windows(config: LoadTestConfig) -> list[tuple[float, float]]:
    """(start, stop) offsets in seconds of each user."""
    users, duration = config.concurrency, config.duration
    if config.scenario != "peak":
        return [(0.0, duration)] * users
    ramp, hold = duration / 4, duration / 2
    return [(ramp * i / users, ramp + hold + ramp * (users - i) / users) for i in range(users)]


async def _user(client, config: LoadTestConfig, plan: _Plan, start: float, stop: float, t0: float,
                samples: list[Sample], active: list[int], peak: list[int]) -> None:
    await asyncio.sleep(max(0.0, t0 + start - time.monotonic()))
    active[0] += 1
    peak[0] = max(peak[0], active[0])
    try:
        while time.monotonic() < t0 + stop:
            ticket = plan.next()
            if ticket is None:
                return
            samples.append(await _send(client, config, *ticket))
    finally:
        active[0] -= 1


async def run_async(config: LoadTestConfig) -> dict:
    config.validate()
    headers = {"User-Agent": "quivr-pipelines-loadtest"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)
    samples: list[Sample] = []
    active, peak = [0], [0]
    async with httpx.AsyncClient(base_url=config.url.rstrip("/"), headers=headers, limits=limits,
                                 timeout=httpx.Timeout(config.timeout), follow_redirects=False) as client:
        t0 = time.monotonic()
        plan = _Plan(config, t0 + config.duration)
        started = time.perf_counter()
        await asyncio.gather(*(_user(client, config, plan, start, stop, t0, samples, active, peak)
                               for start, stop in _user_windows(config)))
        elapsed = time.perf_counter() - started
    stopped_by = plan.stopped_by or ("requests" if plan.sent >= config.requests else "duration")
    return summarize(config, samples, elapsed, stopped_by, peak[0])


def run(config: LoadTestConfig) -> dict:
    return asyncio.run(run_async(config))


# -- report ------------------------------------------------------------------------------------
def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _latency(values: list[float]) -> dict:
    values = sorted(values)
    if not values:
        return {"count": 0}
    out = {f"p{p}": round(percentile(values, p), 2) for p in (50, 95, 99)}
    out.update(count=len(values), max=round(values[-1], 2), min=round(values[0], 2),
               mean=round(sum(values) / len(values), 2))
    return out


def summarize(config: LoadTestConfig, samples: list[Sample], elapsed: float, stopped_by: str,
              peak_users: int) -> dict:
    total = len(samples)
    ok = [s for s in samples if s.ok]
    failures = Counter(s.status for s in samples if not s.ok)
    limited = [s for s in samples if s.status == "429"]
    by_kind = {}
    for kind in KINDS:
        mine = [s for s in samples if s.kind == kind]
        if mine:
            by_kind[kind] = {"total": len(mine), "successes": sum(s.ok for s in mine),
                             "latency_ms": _latency([s.latency_ms for s in mine if s.ok])}
    ttft = [s.ttft_ms for s in samples if s.kind == "stream" and s.ok and s.ttft_ms is not None]
    return {
        "scenario": config.scenario, "url": config.url, "kb": config.kb, "concurrency": config.concurrency,
        "peak_users": peak_users, "max_requests": config.requests, "max_duration_s": config.duration,
        "stopped_by": stopped_by, "elapsed_s": round(elapsed, 3),
        "total": total, "successes": len(ok), "failures": total - len(ok),
        "failures_by_status": dict(sorted(failures.items())),
        "rate_limited": len(limited), "rate_limited_with_retry_after": sum(s.retry_after for s in limited),
        "missing_request_id": sum(not s.request_id for s in samples if s.status.isdigit()),
        "error_rate": round((total - len(ok)) / total, 4) if total else 0.0,
        "rps": round(total / elapsed, 2) if elapsed > 0 else 0.0,
        "success_rps": round(len(ok) / elapsed, 2) if elapsed > 0 else 0.0,
        "latency_ms": _latency([s.latency_ms for s in ok]),
        "time_to_first_token_ms": _latency(ttft) if any(s.kind == "stream" for s in samples) else None,
        "search_server_took_ms": _latency([s.took_ms for s in ok if s.took_ms is not None]),
        "search_cached": sum(bool(s.cached) for s in ok),
        "by_kind": by_kind,
    }


def format_report(report: dict) -> str:
    lat = report["latency_ms"]
    lines = [
        f"scenario {report['scenario']} against {report['url']} kb={report['kb']}: "
        f"concurrency {report['concurrency']} (peak {report['peak_users']}), stopped by {report['stopped_by']} "
        f"after {report['elapsed_s']:.1f} s",
        f"requests   total {report['total']}, successes {report['successes']}, failures {report['failures']}"
        + (f" {report['failures_by_status']}" if report["failures_by_status"] else ""),
        f"rate limit 429: {report['rate_limited']} ({report['rate_limited_with_retry_after']} with Retry-After)",
        f"throughput {report['rps']:.2f} req/s ({report['success_rps']:.2f} successful), "
        f"error rate {report['error_rate'] * 100:.2f} %",
    ]
    if lat.get("count"):
        lines.append(f"latency ms p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}  "
                     f"max {lat['max']:.1f}  (successful requests)")
    ttft = report.get("time_to_first_token_ms")
    if ttft and ttft.get("count"):
        lines.append(f"streaming  time to first token ms p50 {ttft['p50']:.1f}  p95 {ttft['p95']:.1f}  "
                     f"p99 {ttft['p99']:.1f}  max {ttft['max']:.1f}")
    took = report.get("search_server_took_ms") or {}
    if took.get("count"):
        lines.append(f"searches   time inside the service (took_ms) p50 {took['p50']:.1f}  p95 {took['p95']:.1f}; "
                     f"{report['search_cached']} answered from its result cache")
    for kind, row in report["by_kind"].items():
        kl = row["latency_ms"]
        extra = f", p50 {kl['p50']:.1f} ms, p95 {kl['p95']:.1f} ms" if kl.get("count") else ""
        lines.append(f"  {kind:<8} {row['successes']}/{row['total']} ok{extra}")
    return "\n".join(lines)


def api_key_from_env(explicit: str | None) -> str | None:
    return explicit or os.environ.get(API_KEY_ENV) or None
