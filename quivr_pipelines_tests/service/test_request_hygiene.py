"""Request hygiene of the query service over real HTTP (issue 9, item 5): anonymous and invalid-key
requests rate-limited per client address, no Host reflection in redirects, strict request types,
415 for a non-JSON body, `source_uri` as the KB-relative key. Each test sends the request that
showed the defect and asserts the fixed answer."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
import uvicorn

from quivr_pipelines_tests.service.conftest import ServerThread, auth
from quivr_pipelines_tests.service.test_query_service import SUPER_BOWL_Q, sse_events

SEARCH = "/v1/kbs/alpha/search"
ASK = "/v1/kbs/alpha/ask"


class TunedServer(ServerThread):
    """ServerThread with uvicorn options (here: which proxies are trusted for X-Forwarded-For)."""

    def __init__(self, app, **options):
        super().__init__(app)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                                    lifespan="on", **options))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)


@pytest.fixture(scope="module")
def limited(stack):
    """A service with a small anonymous budget (3 at once, then one per 10 s per address) that
    also exposes the full source URI (the opt-in), behind the default trusted proxy (loopback)."""
    from quivr_pipelines.service.app import create_app

    settings = stack["settings"].model_copy(update={"anon_rate_limit_per_minute": 6.0,
                                                    "anon_rate_limit_burst": 3,
                                                    "service_expose_source_uri": True})
    server = ServerThread(create_app(settings)).start()
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c
    server.stop()


def from_address(address: str, headers: dict | None = None) -> dict:
    """uvicorn's proxy_headers: loopback is a trusted proxy by default, so this is the client."""
    return {"X-Forwarded-For": address, **(headers or {})}


# -- 1. rate limit of unauthenticated and invalid-key requests, per client address -----------
def test_anonymous_requests_are_limited_per_forwarded_address(limited, stack):
    body = {"query": "oxygen", "mode": "sparse"}
    a, b = "203.0.113.7", "203.0.113.8"
    codes = [limited.post(SEARCH, headers=from_address(a), json=body).status_code for _ in range(3)]
    assert codes == [401, 401, 401]
    refused = limited.post(SEARCH, headers=from_address(a), json=body)
    assert refused.status_code == 429, refused.text
    assert 1 <= int(refused.headers["retry-after"]) <= 10  # 6 per minute: one token per 10 s
    assert "QUIVR_ANON_RATE_LIMIT_PER_MINUTE" in refused.json()["detail"]
    assert refused.headers["x-request-id"]
    # Anonymous paths other than the API spend the same budget; probes never do.
    assert limited.get("/openapi.json", headers=from_address(a)).status_code == 429
    assert limited.get("/health", headers=from_address(a)).status_code == 200
    assert limited.get("/ready", headers=from_address(a)).status_code == 200
    # A blocked address is refused before its key is looked up (no database work for guessers).
    blocked_key = limited.post(SEARCH, headers=from_address(a, auth(stack["keys"]["admin"])), json=body)
    assert blocked_key.status_code == 429
    # Another address is untouched.
    assert limited.post(SEARCH, headers=from_address(b), json=body).status_code == 401
    assert limited.post(SEARCH, headers=from_address(b, auth(stack["keys"]["admin"])), json=body).status_code == 200


def test_invalid_keys_spend_the_budget_valid_keys_do_not(limited, stack):
    body = {"query": "oxygen", "mode": "sparse"}
    guesser, worker = "198.51.100.1", "198.51.100.2"
    bad = [limited.post(SEARCH, headers=from_address(guesser, auth(f"qvr_guess{i}")), json=body).status_code
           for i in range(4)]
    assert bad == [401, 401, 401, 429]
    expired = limited.post(SEARCH, headers=from_address("198.51.100.3", auth(stack["keys"]["expired"])), json=body)
    assert expired.status_code == 401
    good = [limited.post(SEARCH, headers=from_address(worker, auth(stack["keys"]["admin"])), json=body).status_code
            for _ in range(6)]
    assert good == [200] * 6
    assert limited.post(SEARCH, headers=from_address(worker), json=body).status_code == 401  # budget intact


def test_forwarded_address_is_ignored_from_an_untrusted_peer(stack):
    """With loopback not among the trusted proxies, X-Forwarded-For is the client's own claim:
    every request counts against the socket's address, whatever it says."""
    from quivr_pipelines.service.app import create_app

    settings = stack["settings"].model_copy(update={"anon_rate_limit_per_minute": 6.0, "anon_rate_limit_burst": 2})
    server = TunedServer(create_app(settings), forwarded_allow_ips="192.0.2.1").start()
    try:
        codes = [httpx.post(server.url + SEARCH, headers=from_address(f"192.0.2.{i}"), json={"query": "x"},
                            timeout=30).status_code for i in range(10, 13)]
    finally:
        server.stop()
    assert codes == [401, 401, 429]


def test_limiter_buckets_refill_and_memory_is_bounded():
    from quivr_pipelines.service.ratelimit import AddressLimiter

    now = [1000.0]
    limiter = AddressLimiter(per_minute=60, burst=2, max_clients=100, clock=lambda: now[0])
    assert [limiter.take("10.0.0.1") for _ in range(3)] == [0, 0, 1]  # 0: allowed; else seconds to wait
    assert limiter.blocked("10.0.0.1") == 1 and limiter.blocked("10.0.0.2") == 0
    now[0] += 1.0
    assert limiter.take("10.0.0.1") == 0 and limiter.take("10.0.0.1") == 1
    # IPv6 clients are counted per /64 (one host owns the whole prefix).
    assert limiter.take("2001:db8::1") == 0 and limiter.take("2001:db8::2") == 0
    assert limiter.take("2001:db8::ffff") == 1
    for i in range(1000):
        limiter.take(f"10.1.{i // 256}.{i % 256}")
    assert len(limiter) <= 100
    assert AddressLimiter(per_minute=0, burst=1).take("10.0.0.1") == 0  # 0: no limit
    assert all(AddressLimiter(per_minute=0, burst=1).take("10.0.0.1") == 0 for _ in range(50))


# -- 2. no Host header reflection ------------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), [("POST", SEARCH + "/"), ("POST", ASK + "/"), ("GET", "/health/"),
                                              ("GET", "/ready/")])
def test_trailing_slash_does_not_redirect_to_the_host_header(client, stack, method, path):
    response = client.request(method, path, headers={"Host": "evil.example", **auth(stack["keys"]["admin"])},
                              json={"query": "oxygen"} if method == "POST" else None)
    assert response.status_code in (404, 405), (response.status_code, response.headers)
    assert "location" not in response.headers
    assert "evil.example" not in response.text


# -- 3. strict request types -----------------------------------------------------------------
@pytest.mark.parametrize(("path", "field", "value"), [
    (SEARCH, "top_k", "5"), (SEARCH, "top_k", 5.0), (SEARCH, "top_k", True), (ASK, "stream", "yes"),
    (ASK, "stream", 1), (ASK, "stream", "true"), (ASK, "temperature", "0.5"), (ASK, "max_tokens", "10"),
    (SEARCH, "query", 5),
])
def test_lax_types_are_refused(client, stack, path, field, value):
    response = client.post(path, headers=auth(stack["keys"]["admin"]), json={"query": "oxygen", field: value})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][:2] == ["body", field]


def test_json_numbers_bools_and_dates_still_work(client, stack):
    headers = auth(stack["keys"]["admin"])
    search = client.post(SEARCH, headers=headers, json={
        "query": "oxygen", "top_k": 2, "filters": {"ingested_before": "2999-01-01T00:00:00Z"}})
    assert search.status_code == 200 and len(search.json()["results"]) == 2
    for extra in ({"temperature": 0}, {"temperature": 0.5, "max_tokens": 64, "stream": False}, {"stream": True}):
        response = client.post(ASK, headers=headers, json={"query": "oxygen", "top_k": 1, **extra})
        assert response.status_code == 200, (extra, response.text)


# -- 4. 415 for a body that is not JSON ------------------------------------------------------
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "text/json",
                                          "multipart/form-data; boundary=x", None])
def test_a_body_that_is_not_json_gets_415(client, stack, content_type):
    body = json.dumps({"query": "oxygen"}).encode()
    headers = auth(stack["keys"]["admin"])
    if content_type:
        headers["Content-Type"] = content_type
    request = client.build_request("POST", SEARCH, headers=headers, content=body)
    assert request.headers.get("content-type") == content_type  # None: httpx sends no Content-Type
    response = client.send(request)
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["detail"]


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/vnd.api+json",
                                          "Application/JSON"])
def test_json_content_types_are_accepted(client, stack, content_type):
    response = client.post(SEARCH, headers={**auth(stack["keys"]["admin"]), "Content-Type": content_type},
                           content=json.dumps({"query": "oxygen"}).encode())
    assert response.status_code == 200, response.text


def test_authentication_comes_before_the_content_type(client):
    response = client.post(SEARCH, headers={"Content-Type": "text/plain"}, content=b'{"query": "x"}')
    assert response.status_code == 401


# -- 5. source_uri: the KB-relative key unless configured otherwise --------------------------
def test_source_uri_is_the_kb_relative_key(client, stack):
    headers = auth(stack["keys"]["admin"])
    server_paths = (str(stack["settings"].data_dir), str(stack["settings"].inbox_dir), "file://", "s3://")
    search = client.post(SEARCH, headers=headers, json={"query": SUPER_BOWL_Q, "top_k": 5})
    ask = client.post(ASK, headers=headers, json={"query": SUPER_BOWL_Q, "top_k": 5})
    streamed = client.post(ASK, headers=headers, json={"query": SUPER_BOWL_Q, "top_k": 5, "stream": True})
    for response in (search, ask, streamed):
        assert response.status_code == 200, response.text
        assert not any(p in response.text for p in server_paths), response.text[:500]
    results = search.json()["results"]
    citations = ask.json()["citations"]
    streamed_citations = dict(sse_events(streamed.text))["citations"]
    for item in results + citations + streamed_citations:
        assert item["source_uri"] == item["document_key"]
    assert results[0]["source_uri"] == "sport/super-bowl-defense.txt"


def test_source_uri_is_the_full_uri_when_configured(limited, stack):
    response = limited.post(SEARCH, headers=from_address("203.0.113.50", auth(stack["keys"]["admin"])),
                            json={"query": SUPER_BOWL_Q, "top_k": 1})
    assert response.status_code == 200, response.text
    top = response.json()["results"][0]
    assert top["source_uri"] != top["document_key"]
    assert top["source_uri"].endswith("alpha/sport/super-bowl-defense.txt")


# -- the schema still renders ----------------------------------------------------------------
def test_openapi_schema_renders(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert {SEARCH.replace("alpha", "{kb}"), ASK.replace("alpha", "{kb}")} <= set(schema["paths"])
    search = schema["components"]["schemas"]["SearchRequest"]["properties"]
    # 100 for evaluation keys; the router refuses 51..100 for other keys (403, test_search_fusion)
    assert search["top_k"]["type"] == "integer" and search["top_k"]["maximum"] == 100
    assert "evaluation" in search["top_k"]["description"]
    ask = schema["components"]["schemas"]["AskRequest"]["properties"]
    assert ask["stream"]["type"] == "boolean"
    responses = schema["paths"][SEARCH.replace("alpha", "{kb}")]["post"]["responses"]
    assert {"415", "429"} <= set(responses)
    assert client.get("/docs").status_code == 200
