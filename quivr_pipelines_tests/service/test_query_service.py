"""The query service over HTTP: search, ask (extractive, LLM, streamed), every error status,
security (keys, KB scoping, limits, CORS), caches, audit and usage rows, metrics, readiness."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from quivr_pipelines_tests.service.conftest import ALPHA_DOCS, BETA_DOCS, LATE_DOC, ORIGIN, auth, ingest

SUPER_BOWL_Q = "How many points did the Panthers defense surrender?"


def sse_events(text: str) -> list[tuple[str, object]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def db_rows(stack, sql: str, params=()) -> list[tuple]:
    settings = stack["settings"]
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        conn.execute(f'SET search_path TO "{settings.database_schema}"')
        return conn.execute(sql, params).fetchall()


# -- search ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["hybrid", "dense", "sparse"])
def test_search_returns_ranked_chunks_in_every_mode(client, stack, mode):
    response = client.post("/v1/kbs/alpha/search", headers=auth(stack["keys"]["admin"]),
                           json={"query": SUPER_BOWL_Q, "top_k": 3, "mode": mode})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["kb"], body["query"], body["mode"]) == ("alpha", SUPER_BOWL_Q, mode)
    assert 1 <= len(body["results"]) <= 3 and body["took_ms"] >= 0
    top = body["results"][0]
    assert top["document_key"] == "sport/super-bowl-defense.txt"
    assert "308 points" in top["text"]
    assert top["source_uri"] == "sport/super-bowl-defense.txt"  # the KB-relative key, no server path
    assert top["chunk_index"] == 0 and top["content_type"] == "text/plain"
    assert set(top) == {"text", "score", "document_key", "page_number", "source_uri", "chunk_index",
                        "content_type", "section_title"}
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert response.headers["x-request-id"]


def test_result_cache_hits_then_invalidates_when_ingestion_writes(client, stack):
    headers = auth(stack["keys"]["admin"])
    query = {"query": "Apollo moon landing program of NASA", "top_k": 5}
    first = client.post("/v1/kbs/alpha/search", headers=headers, json=query).json()
    second = client.post("/v1/kbs/alpha/search", headers=headers, json=query).json()
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["results"] == first["results"]
    assert all(r["document_key"] != LATE_DOC[0] for r in first["results"])

    # Ingestion (another writer on the embedded store, while the service holds it) adds a document.
    ingest(stack["settings"], "alpha", dict([LATE_DOC]), stack["texts"])
    third = client.post("/v1/kbs/alpha/search", headers=headers, json=query).json()
    assert third["cached"] is False
    assert third["results"][0]["document_key"] == LATE_DOC[0]


def test_filters_narrow_results_and_cannot_leave_the_kb(client, stack):
    headers = auth(stack["keys"]["alpha"])
    beta_text = stack["texts"][BETA_DOCS["secret/beta-only.txt"]][:200]

    def search(filters, query=beta_text):
        response = client.post("/v1/kbs/alpha/search", headers=headers,
                               json={"query": query, "top_k": 50, "filters": filters})
        assert response.status_code == 200, response.text
        return [r["document_key"] for r in response.json()["results"]]

    everything = search(None)
    assert everything and all(key in ALPHA_DOCS or key == LATE_DOC[0] for key in everything)
    assert search({"document_key_prefix": "secret/"}) == []  # beta's prefix finds nothing from alpha
    assert set(search({"document_key_prefix": "science/"})) == {"science/amazon-forest.md", "science/oxygen.txt"}
    assert search({"content_types": ["text/markdown"]}) == ["science/amazon-forest.md"]
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert search({"ingested_after": future}) == []
    assert set(search({"ingested_before": future})) == set(everything)

    # No way to name another KB: unknown filter fields are refused, the path KB is forced.
    response = client.post("/v1/kbs/alpha/search", headers=headers,
                           json={"query": "museum", "filters": {"kb": "beta"}})
    assert response.status_code == 422
    response = client.post("/v1/kbs/alpha/search", headers=headers, json={"query": "museum", "kb": "beta"})
    assert response.status_code == 422
    response = client.post("/v1/kbs/beta/search", headers=headers, json={"query": "museum"})
    assert response.status_code == 403


# -- errors ----------------------------------------------------------------------------------
def test_authentication_failures_are_401(client, stack):
    body = {"query": "oxygen"}
    cases = {
        "none": {},
        "bad": auth("qvr_not-a-real-key"),
        "expired": auth(stack["keys"]["expired"]),
        "revoked": {"X-API-Key": stack["keys"]["revoked"]},
        "malformed": {"Authorization": "Basic abc"},
    }
    details = {}
    for case, headers in cases.items():
        response = client.post("/v1/kbs/alpha/search", headers=headers, json=body)
        assert response.status_code == 401, (case, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        details[case] = response.json()["detail"]
    assert "missing API key" in details["none"]
    assert details["bad"] == "invalid API key"
    assert "expired" in details["expired"] and "revoked" in details["revoked"]
    ok = client.post("/v1/kbs/alpha/search", headers={"X-API-Key": stack["keys"]["admin"]}, json=body)
    assert ok.status_code == 200


def test_kb_access_unknown_kb_and_fingerprint_mismatch(client, stack):
    alpha_only, admin = auth(stack["keys"]["alpha"]), auth(stack["keys"]["admin"])
    body = {"query": "museum"}
    assert client.post("/v1/kbs/beta/search", headers=alpha_only, json=body).status_code == 403
    assert client.post("/v1/kbs/nope/search", headers=alpha_only, json=body).status_code == 403
    assert client.post("/v1/kbs/beta/search", headers=admin, json=body).status_code == 200
    missing = client.post("/v1/kbs/nope/search", headers=admin, json=body)
    assert missing.status_code == 404 and missing.json() == {"detail": "unknown knowledge base 'nope'"}
    assert client.post("/v1/kbs/NOT..valid/search", headers=admin, json=body).status_code == 404
    for path in ("/v1/kbs/gamma/search", "/v1/kbs/gamma/ask"):
        mismatch = client.post(path, headers=admin, json=body)
        assert mismatch.status_code == 409
        detail = mismatch.json()["detail"]
        assert "openai:other-model:8" in detail and "local:all-MiniLM-L6-v2:384" in detail


def test_request_validation_and_limits(client, stack):
    headers = auth(stack["keys"]["admin"])
    url = "/v1/kbs/alpha/search"
    too_long = client.post(url, headers=headers, json={"query": "x" * 301})
    assert too_long.status_code == 422 and "limit is 300" in too_long.json()["detail"]
    assert client.post(url, headers=headers, json={"query": "x" * 300}).status_code == 200
    for bad in ({"query": "a", "top_k": 0}, {"query": "a", "top_k": 101}, {"query": "a", "mode": "fuzzy"},
                {"query": "   "}, {}, {"query": "a", "filters": {"ingested_after": "yesterday"}}):
        response = client.post(url, headers=headers, json=bad)
        assert response.status_code == 422, bad
        assert response.json()["detail"][0]["loc"][0] == "body"
    malformed = client.post(url, headers={**headers, "Content-Type": "application/json"}, content=b'{"query": ')
    assert malformed.status_code == 400 and "malformed JSON" in malformed.json()["detail"]

    big = json.dumps({"query": "a", "filters": {"document_key_prefix": "p" * 5000}}).encode()
    declared = client.post(url, headers={**headers, "Content-Type": "application/json"}, content=big)
    assert declared.status_code == 413 and "4096" in declared.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced on the streamed body
        for start in range(0, len(big), 1000):
            yield big[start:start + 1000]

    streamed = client.post(url, headers={**headers, "Content-Type": "application/json"}, content=chunks())
    assert streamed.status_code == 413


def test_rate_limit_is_shared_across_processes_and_says_when_to_retry(stack):
    """Two app instances (as two workers would be) spend the same PostgreSQL token bucket."""
    key = auth(stack["keys"]["limited"])
    servers = [stack["extractive"].url, stack["generative"].url]
    codes = []
    for i in range(3):
        response = httpx.post(f"{servers[i % 2]}/v1/kbs/alpha/search", headers=key,
                              json={"query": "oxygen", "mode": "sparse"}, timeout=30)
        codes.append(response.status_code)
    assert codes == [200, 200, 429]
    assert 1 <= int(response.headers["retry-after"]) <= 10  # 6 per minute: one token per 10 s
    assert "rate limit" in response.json()["detail"]


def test_cors_allows_only_configured_origins(client):
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    allowed = client.options("/v1/kbs/alpha/search", headers={"Origin": ORIGIN, **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    refused = client.options("/v1/kbs/alpha/search", headers={"Origin": "https://evil.example", **preflight})
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    simple = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers
    assert client.get("/health", headers={"Origin": ORIGIN}).headers["access-control-allow-origin"] == ORIGIN


# -- ask -------------------------------------------------------------------------------------
def test_ask_without_llm_answers_extractively(client, stack):
    headers = auth(stack["keys"]["alpha"])
    response = client.post("/v1/kbs/alpha/ask", headers=headers, json={"query": SUPER_BOWL_Q, "top_k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["extractive"] is True and body["model"] is None
    assert "QUIVR_LLM_MODEL" in body["note"]
    assert "308 points" in body["answer"] and "[1]" in body["answer"]
    assert [c["n"] for c in body["citations"]] == list(range(1, len(body["citations"]) + 1))
    assert body["citations"][0]["document_key"] == "sport/super-bowl-defense.txt"

    streamed = client.post("/v1/kbs/alpha/ask", headers=headers,
                           json={"query": SUPER_BOWL_Q, "top_k": 3, "stream": True})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed.text)
    assert events[0][0] == "citations" and events[0][1] == body["citations"]
    assert {name for name, _ in events[1:-1]} == {"token"}
    assert "".join(data["text"] for name, data in events if name == "token") == body["answer"]
    assert events[-1][0] == "done" and events[-1][1]["extractive"] is True


def test_ask_with_an_openai_compatible_llm(llm_client, stack):
    headers = auth(stack["keys"]["admin"])
    stub = stack["stub"]
    before = len(stub.requests)
    response = llm_client.post("/v1/kbs/alpha/ask", headers=headers,
                               json={"query": SUPER_BOWL_Q, "top_k": 2, "temperature": 0.3, "max_tokens": 64})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["answer"] == stub.chat_reply and body["model"] == "stub-model"
    assert body["extractive"] is False and body["note"] is None
    assert len(body["citations"]) == 2
    assert body["usage"]["completion_tokens"] == 10 and body["usage"]["prompt_tokens"] > 50
    assert body["usage"]["cost_dollars"] == pytest.approx((body["usage"]["prompt_tokens"] + 20) / 1e6)
    sent = stub.requests[before]["body"]
    assert sent["temperature"] == 0.3 and sent["max_tokens"] == 64
    prompt = sent["messages"][1]["content"]
    assert "[1] (source: sport/super-bowl-defense.txt)" in prompt and SUPER_BOWL_Q in prompt

    streamed = llm_client.post("/v1/kbs/alpha/ask", headers=headers,
                               json={"query": SUPER_BOWL_Q, "top_k": 2, "stream": True})
    events = sse_events(streamed.text)
    assert [name for name, _ in events][:2] == ["citations", "token"]
    assert "".join(d["text"] for name, d in events if name == "token") == stub.chat_reply
    assert events[-1] == ("done", {**events[-1][1], "model": "stub-model", "extractive": False})
    assert events[-1][1]["usage"]["completion_tokens"] == 10


def test_llm_rate_limit_retried_then_surfaced_as_503(llm_client, stack):
    headers = auth(stack["keys"]["admin"])
    stub = stack["stub"]
    body = {"query": "What is oxygen?", "top_k": 2}
    stub.rate_limit_next = 1  # the client's one retry absorbs it
    retried = llm_client.post("/v1/kbs/alpha/ask", headers=headers, json=body)
    assert retried.status_code == 200 and retried.json()["answer"] == stub.chat_reply
    assert stub.rate_limit_next == 0

    stub.rate_limit_next = 2  # first try and the retry both refused
    failed = llm_client.post("/v1/kbs/alpha/ask", headers=headers, json=body)
    assert failed.status_code == 503
    assert "rate limiting" in failed.json()["detail"] and int(failed.headers["retry-after"]) >= 1

    stub.rate_limit_next = 2
    failed_stream = llm_client.post("/v1/kbs/alpha/ask", headers=headers, json={**body, "stream": True})
    assert failed_stream.status_code == 503  # the stream is opened before the response starts
    stub.rate_limit_next = 0


def test_llm_stream_cut_midway_ends_with_an_error_event(llm_client, stack):
    stub = stack["stub"]
    stub.break_stream_after = 3
    try:
        response = llm_client.post("/v1/kbs/alpha/ask", headers=auth(stack["keys"]["admin"]),
                                   json={"query": "What is oxygen?", "stream": True})
    finally:
        stub.break_stream_after = None
    events = sse_events(response.text)
    assert [name for name, _ in events] == ["citations", "token", "token", "token", "error"]
    assert "ended before the answer was complete" in events[-1][1]["detail"]


# -- records and observability ---------------------------------------------------------------
def test_audit_and_usage_rows_are_written(client, llm_client, stack):
    key, key_id = stack["keys"]["alpha"], stack["ids"]["alpha reader"]
    query = f"audit trail question {time.time()}"
    ok = client.post("/v1/kbs/alpha/search", headers=auth(key), json={"query": query})
    denied = client.post("/v1/kbs/beta/search", headers=auth(key), json={"query": query})
    anonymous = client.post("/v1/kbs/alpha/ask", json={"query": query})
    asked = llm_client.post("/v1/kbs/alpha/ask", headers=auth(stack["keys"]["admin"]),
                            json={"query": query + " llm"})
    assert [r.status_code for r in (ok, denied, anonymous, asked)] == [200, 403, 401, 200]
    for server in ("extractive", "generative"):
        assert stack[server].service.writer.flush()
    ids = [r.headers["x-request-id"] for r in (ok, denied, anonymous, asked)]
    rows = {row[0]: row[1:] for row in db_rows(
        stack, "SELECT request_id, api_key_id, kb, action, status, latency_ms FROM audit_log"
               " WHERE request_id = ANY(%s)", (ids,))}
    assert rows[ids[0]][:4] == (key_id, "alpha", "search", 200) and rows[ids[0]][4] > 0
    assert rows[ids[1]][:4] == (key_id, "beta", "search", 403)
    assert rows[ids[2]][:4] == (None, "alpha", "ask", 401)
    assert rows[ids[3]][:4] == (stack["ids"]["admin"], "alpha", "ask", 200)
    everything = json.dumps(db_rows(stack, "SELECT * FROM audit_log"), default=str)
    assert all(raw not in everything for raw in stack["keys"].values())  # never the key itself

    usage = db_rows(stack, "SELECT kind, provider, model, kb, prompt_tokens, completion_tokens, inputs,"
                           " cached_inputs, api_key_id FROM usage_ledger WHERE kind <> 'embedding'")
    assert ("query_embedding", "local", "all-MiniLM-L6-v2", "alpha") in {u[:4] for u in usage}
    mine = [u for u in usage if u[0] == "query_embedding" and u[8] == key_id]
    assert mine and all(u[6] == 1 for u in mine) and any(u[4] > 0 for u in mine)
    llm_rows = [u for u in usage if u[0] == "llm_completion"]
    assert llm_rows and all(u[1:3] == ("openai", "stub-model") and u[5] == 10 for u in llm_rows)
    assert any(u[8] == stack["ids"]["admin"] for u in llm_rows)


def test_health_ready_and_metrics(client, stack, monkeypatch):
    health = client.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert len(health.headers["x-request-id"]) == 32
    assert client.get("/health", headers={"X-Request-ID": "trace-42"}).headers["x-request-id"] == "trace-42"
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "embedder": "ok", "vector_store": "ok"}

    client.post("/v1/kbs/alpha/search", headers=auth(stack["keys"]["admin"]), json={"query": "metrics"})
    text = client.get("/metrics").text
    for name in ("quivr_queries_total", "quivr_query_duration_seconds", "quivr_retrieval_duration_seconds",
                 "quivr_generation_duration_seconds", "quivr_query_results_count", "quivr_active_connections",
                 "quivr_llm_tokens_total", "quivr_llm_cost_dollars", "quivr_embedding_tokens_total"):
        assert f"\n{name}" in text or text.startswith(name) or f"# TYPE {name}" in text, name
    assert 'quivr_queries_total{action="search",status="200"}' in text

    def broken(*args, **kwargs):
        raise psycopg.OperationalError("connection refused (injected)")

    monkeypatch.setattr(stack["extractive"].service.db.pool, "connection", broken)
    down = client.get("/ready")
    assert down.status_code == 503
    assert down.json()["status"] == "unavailable"  # the error type only: /ready is unauthenticated
    assert down.json()["checks"]["database"] == "unreachable (OperationalError)" and "injected" not in down.text


def test_concurrent_requests_on_the_threadpool(client, stack):
    """Searches in parallel (threadpool routes over one held embedded store and one embedder)."""
    from concurrent.futures import ThreadPoolExecutor

    headers = auth(stack["keys"]["admin"])

    def one(i):
        return client.post("/v1/kbs/alpha/search", headers=headers,
                           json={"query": f"rainforest oxygen {i}", "top_k": 3, "mode": ("hybrid", "dense", "sparse")[i % 3]})

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(one, range(24)))
    assert [r.status_code for r in responses] == [200] * 24
    assert all(r.json()["results"] for r in responses)


# -- command line ----------------------------------------------------------------------------
def test_keys_cli_create_list_revoke(client, stack):
    from typer.testing import CliRunner

    from quivr_pipelines.cli import app

    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "ci bot", "--kb", "alpha", "--expires-in-days", "7"])
    assert created.exit_code == 0, created.output
    raw = created.stdout.strip().splitlines()[-1]
    key_id = created.stdout.split()[1]
    assert raw.startswith("qvr_") and len(raw) > 40
    assert client.post("/v1/kbs/alpha/search", headers=auth(raw), json={"query": "oxygen"}).status_code == 200
    assert client.post("/v1/kbs/beta/search", headers=auth(raw), json={"query": "oxygen"}).status_code == 403

    listed = runner.invoke(app, ["keys", "list", "--json"])
    row = next(r for r in json.loads(listed.stdout) if r["id"] == key_id)
    assert (row["name"], row["role"], row["kbs"], row["state"]) == ("ci bot", "viewer", ["alpha"], "active")
    assert raw not in listed.stdout
    assert db_rows(stack, "SELECT count(*) FROM api_keys WHERE key_hash::text LIKE %s", (f"%{raw}%",))[0][0] == 0

    assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 0
    assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 1
    assert client.post("/v1/kbs/alpha/search", headers=auth(raw), json={"query": "oxygen"}).status_code == 401
    assert runner.invoke(app, ["keys", "create", "x", "--role", "root"]).exit_code != 0


def test_serve_command_forces_one_worker_and_flushes_audit_rows_on_sigterm(stack, env, tmp_path):
    """`quivr-pipelines serve` as a process: with the embedded store it serves with one worker;
    rows still queued at SIGTERM (a 60 s batch window here) are written before it exits."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    child_env = {**os.environ, "QUIVR_AUDIT_FLUSH_SECONDS": "60", "QUIVR_SERVICE_WORKERS": "3"}
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "quivr_pipelines.cli", "serve", "--port", str(port)],
                            env=child_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read()
            time.sleep(0.2)
        ids = []
        for _ in range(5):
            response = httpx.post(f"{url}/v1/kbs/alpha/search", json={"query": "q"}, timeout=30)
            assert response.status_code == 401
            ids.append(response.headers["x-request-id"])
        response = httpx.post(f"{url}/v1/kbs/alpha/ask", headers=auth(stack["keys"]["admin"]),
                              json={"query": SUPER_BOWL_Q}, timeout=60)
        assert response.status_code == 200 and response.json()["extractive"] is True
        ids.append(response.headers["x-request-id"])
        assert db_rows(stack, "SELECT count(*) FROM audit_log WHERE request_id = ANY(%s)", (ids,))[0][0] == 0
        proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once shut down; serve's handler exits through atexit
        assert proc.wait(60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    log.seek(0)
    output = log.read()
    assert "serving with 1 worker instead of 3" in output
    assert '"event": "service_stopped"' in output
    rows = db_rows(stack, "SELECT status FROM audit_log WHERE request_id = ANY(%s)", (ids,))
    assert sorted(r[0] for r in rows) == [200] + [401] * 5


def test_failing_dependencies_answer_503_not_500(client, stack, monkeypatch):
    service = stack["extractive"].service
    headers = auth(stack["keys"]["admin"])

    def store_down(*args, **kwargs):
        raise ConnectionError("qdrant unreachable (injected)")

    with monkeypatch.context() as m:
        m.setattr(service.store, "search", store_down)
        response = client.post("/v1/kbs/alpha/search", headers=headers, json={"query": "store fault probe"})
    assert response.status_code == 503 and response.json()["detail"] == "vector store unavailable (ConnectionError)"
    assert response.headers["retry-after"] == "5"

    def db_down(*args, **kwargs):
        raise psycopg.OperationalError("connection refused (injected)")

    with monkeypatch.context() as m:
        m.setattr(service.db.pool, "connection", db_down)
        response = client.post("/v1/kbs/alpha/search", headers=headers, json={"query": "db fault probe"})
    assert response.status_code == 503 and "catalog database unavailable" in response.json()["detail"]
    assert client.post("/v1/kbs/alpha/search", headers=headers, json={"query": "db fault probe"}).status_code == 200
