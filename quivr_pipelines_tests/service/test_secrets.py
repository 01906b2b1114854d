"""No secret and no upstream internal reaches an API client, a log line, an audit or usage row, or
/metrics, on any error path.

The service answers from the OpenAI-compatible stub (embeddings and chat) with a secret key, a
DSN whose password is a secret and a Qdrant API key; each error path is triggered once: the
provider's 401 echoing the key, 429 and 500 with a traceback and a DSN in the body, a timeout, a
connection refused, a streamed answer refused, a database error and a vector store error whose
messages carry secrets (those two injected). Then every output is searched for the secrets and
for the upstream bodies' marker. Before issue 9 the clients got `Incorrect API key provided:
sk-...` word for word, and the traceback and the DSN password with it.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import uuid

import httpx
import psycopg
import pytest

from quivr_pipelines_tests.openai_stub import OpenAIStub
from quivr_pipelines_tests.service.conftest import ALPHA_DOCS, ServerThread, auth, ingest, passages

SECRET_KEY = f"sk-test-SECRET-{uuid.uuid4().hex}"
DB_PASSWORD = f"pw-SECRET-{uuid.uuid4().hex[:16]}"
QDRANT_KEY = f"qdrant-SECRET-{uuid.uuid4().hex[:16]}"
CHAT, EMBEDDINGS = "/chat/completions", "/embeddings"
MARKER = f"UPSTREAM-INTERNAL-{uuid.uuid4().hex[:8]}"  # in every upstream body, never in an output
TRACEBACK = (f'Traceback (most recent call last):\n  File "/srv/provider/{MARKER}.py", line 12, in handle\n'
             f"    db = connect('postgresql://provider:{DB_PASSWORD}@10.0.0.5/prod')\nKeyError: 'model'")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def secret_stack(env):
    from quivr_pipelines.core.catalog import api_keys
    from quivr_pipelines.core.factory import open_database
    from quivr_pipelines.settings import get_settings

    dsn = env["dsn"].replace("postgresql://postgres@", f"postgresql://postgres:{DB_PASSWORD}@")
    assert DB_PASSWORD in dsn  # trust authentication ignores the password: a real DSN, same server
    stub = OpenAIStub().__enter__()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"QUIVR_DATABASE_URL": dsn, "OPENAI_API_KEY": SECRET_KEY, "QUIVR_EMBEDDER": "openai",
                           "QUIVR_OPENAI_BASE_URL": stub.url, "QUIVR_OPENAI_MAX_RETRIES": "0",
                           "QUIVR_LLM_MODEL": "stub-model", "QUIVR_LLM_BASE_URL": stub.url,
                           "QUIVR_LLM_MAX_RETRIES": "0", "QUIVR_LLM_TIMEOUT_SECONDS": "1",
                           "QUIVR_QDRANT_API_KEY": QDRANT_KEY, "QUIVR_DATA_DIR": str(env["root"] / "secrets")}.items():
            mp.setenv(key, value)
        settings = get_settings()
        ingest(settings, "alpha", ALPHA_DOCS, passages())
        db = open_database(settings)
        admin = api_keys.create_key(db, "secrets admin", "admin")[1]
        db.close()
        yield {"settings": settings, "stub": stub, "admin": admin, "dsn": dsn}
    stub.__exit__(None, None, None)


def everything_said(env, responses) -> str:
    """HTTP bodies and headers (/metrics among them), every audit/usage/poison row."""
    outputs = [f"{r.status_code} {dict(r.headers)} {r.text}" for r in responses]
    with psycopg.connect(env["dsn"]) as conn:
        conn.execute(f'SET search_path TO "{env["schema"]}"')
        for table in ("audit_log", "usage_ledger", "audit_poison", "admin_audit", "documents"):
            outputs.append(json.dumps(conn.execute(f"SELECT * FROM {table}").fetchall(), default=str))
    return "\n".join(outputs)


def test_no_secret_or_upstream_body_in_any_output(secret_stack, env, capfd, caplog, monkeypatch):
    from quivr_pipelines.service.app import create_app

    stub, headers = secret_stack["stub"], auth(secret_stack["admin"])
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)  # a deployment's root handler, tracebacks included
    root.addHandler(handler)
    caplog.set_level(logging.DEBUG)
    server = ServerThread(create_app(secret_stack["settings"])).start()
    service = server.service
    responses, expected = [], []
    n = iter(range(1000))

    def ask(status: int, **body):
        response = client.post("/v1/kbs/alpha/ask", headers=headers,
                               json={"query": f"What is the Super Bowl? {next(n)}", **body})
        responses.append(response)
        expected.append((status, response.status_code, response.text))
        return response

    def search(status: int):
        response = client.post("/v1/kbs/alpha/search", headers=headers, json={"query": f"oxygen {next(n)}"})
        responses.append(response)
        expected.append((status, response.status_code, response.text))
        return response

    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert ask(200).json()["extractive"] is False  # the stack works: 200 from the stub's LLM

            # The LLM provider: 401 echoing the key, 429 and 500 with internals, timeout, refused.
            stub.fail_next(401, echo_key=True, code="invalid_api_key", type="invalid_request_error", endpoint=CHAT)
            r401 = ask(502)
            stub.fail_next(429, message=f"Rate limit reached {MARKER}", traceback=TRACEBACK,
                           headers={"Retry-After": "3"}, endpoint=CHAT)
            r429 = ask(503)
            stub.fail_next(500, message=f"{MARKER} upstream crashed; dsn {secret_stack['dsn']}", traceback=TRACEBACK,
                           endpoint=CHAT)
            r500 = ask(502)
            stub.fail_next(500, delay=2.5, endpoint=CHAT)  # > QUIVR_LLM_TIMEOUT_SECONDS
            r_timeout = ask(504)
            stub.fail_next(401, echo_key=True, endpoint=CHAT)
            r_stream = ask(502, stream=True)  # refused before the stream opens: a status, not an event
            real_base = service.llm.client.base_url
            service.llm.client.base_url = f"http://{SECRET_KEY}:x@127.0.0.1:{closed_port()}/v1/"
            r_refused = ask(502)
            service.llm.client.base_url = real_base

            # The embedding provider, on the query: 401 echoing the key, 500 with internals.
            stub.fail_next(401, echo_key=True, endpoint=EMBEDDINGS)
            e401 = search(502)
            stub.fail_next(500, message=MARKER, traceback=TRACEBACK, endpoint=EMBEDDINGS)
            e500 = search(502)

            # The catalog database and the vector store fail with secrets in their messages (injected).
            def db_down(*args, **kwargs):
                raise psycopg.OperationalError(f'connection to "{secret_stack["dsn"]}" failed: password {DB_PASSWORD}')

            with monkeypatch.context() as m:
                m.setattr(service.db.pool, "connection", db_down)
                r_db = search(503)
                ready = client.get("/ready")
                responses.append(ready)

            def store_down(*args, **kwargs):
                raise RuntimeError(f"Unexpected Response: 500 api-key {QDRANT_KEY}\nRaw response content:\n"
                                   f"b'{MARKER} {TRACEBACK}'")

            with monkeypatch.context() as m:
                m.setattr(service.store, "search", store_down)
                r_store = search(503)
            assert search(200).status_code == 200  # and it all recovers
            assert service.writer.flush(timeout=20)
            responses.append(client.get("/metrics"))
    finally:
        server.stop()
        root.removeHandler(handler)

    assert [(want, got) for want, got, _ in expected] == [(want, want) for want, _, _ in expected], expected
    assert ready.status_code == 503
    # The fixed messages: the provider, the upstream status and its request id.
    assert r401.json()["detail"].startswith("the LLM provider (openai) failed: HTTP 401 (upstream request id req_stub_")
    assert "HTTP 429" in r429.json()["detail"] and r429.headers["retry-after"] == "3"
    assert "HTTP 500" in r500.json()["detail"] and "upstream request id req_stub_" in r500.json()["detail"]
    assert r_timeout.json()["detail"] == "the LLM provider (openai) did not answer in time (after 0 retries)"
    assert "HTTP 401" in r_stream.json()["detail"]
    assert r_refused.json()["detail"].startswith("the LLM provider (openai) is unreachable")
    assert e401.json()["detail"].startswith("the embedding provider (openai) failed: HTTP 401")
    assert "HTTP 500" in e500.json()["detail"]
    assert r_db.json()["detail"].startswith("catalog database unavailable")
    assert r_store.json()["detail"] == "vector store unavailable (RuntimeError)"

    captured = capfd.readouterr()
    logs = captured.out + captured.err + caplog.text
    assert '"event": "upstream_error"' in logs and "invalid_api_key" in logs  # the operator's view
    assert "catalog database error" in logs and "vector_store_error" in logs
    said = everything_said(env, responses) + logs
    for secret in (SECRET_KEY, DB_PASSWORD, QDRANT_KEY, secret_stack["admin"], MARKER, "/srv/provider"):
        assert secret not in said, f"{secret} leaked: ...{said[max(0, said.find(secret) - 300):said.find(secret) + 100]}"
