"""The query service on a bad day (issue 9, items 5 and 7): the catalog database stopped and
started again (a throwaway PostgreSQL of the test's own, never the shared one), an embedding
provider that is unreachable at start-up, a threadpool full of slow searches, a slow client
holding half a header, TLS. Each test first reproduces the defect (the old configuration or the
old kind of route, side by side), then asserts the fixed behaviour. Waits are bounded; nothing
asserts on wall time, the figures are printed (`-s`) for the README.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
import warnings
from http.server import ThreadingHTTPServer

import httpx
import psycopg
import pytest
import uvicorn
from psycopg_pool import ConnectionPool, PoolTimeout

from quivr_pipelines.core.catalog import api_keys
from quivr_pipelines.core.catalog.database import Database
from quivr_pipelines.service.server import ServiceConfig
from quivr_pipelines_tests.openai_stub import OpenAIStub
from quivr_pipelines_tests.service import throwaway_postgres
from quivr_pipelines_tests.service.throwaway_postgres import ThrowawayPostgres

needs_pg_binaries = pytest.mark.skipif(not throwaway_postgres.available(),
                                       reason="needs Debian's PostgreSQL 15 binaries (initdb, pg_ctl)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    """An app (or any ASGI callable) under uvicorn on a loopback port in a thread, with the
    same Config class `serve` uses."""

    def __init__(self, app, config_class=ServiceConfig, **options):
        self.app = app
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        scheme = "https" if options.get("ssl_certfile") else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        config = config_class(app, log_level="warning", access_log=False, lifespan="auto", **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(60)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    import os

    for key in list(os.environ):
        if key.startswith("QUIVR_") and key != "QUIVR_TEST_DATABASE_URL":
            monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)


def _settings(tmp_path, dsn: str, schema: str = "quivr", **extra):
    from quivr_pipelines.settings import Settings

    return Settings(data_dir=tmp_path / "data", database_url=dsn, database_schema=schema,
                    rate_limit_per_minute=0, audit_flush_seconds=0.2, **extra)


def _admin_key(dsn: str, schema: str) -> str:
    db = Database(dsn, schema=schema, pool_size=1)
    try:
        return api_keys.create_key(db, "admin", "admin")[1]
    finally:
        db.close()


def _search(url: str, key: str, timeout: float = 20) -> httpx.Response:
    return httpx.post(f"{url}/v1/kbs/nokb/search", json={"query": "anything"},
                      headers={"Authorization": f"Bearer {key}"}, timeout=timeout)


def _poll(fn, until, seconds: float = 60, every: float = 0.2):
    """Call fn until `until(result)`; returns (result, seconds it took). Bounded."""
    started = time.monotonic()
    while True:
        result = fn()
        if until(result):
            return result, time.monotonic() - started
        assert time.monotonic() - started < seconds, f"still {result!r} after {seconds} s"
        time.sleep(every)


@pytest.fixture
def pg():
    server = ThrowawayPostgres()
    server.start()
    yield server
    server.close()


# -- 1. bounded database waits and quick recovery ---------------------------------------------------


def _use_every_connection(pool: ConnectionPool, n: int) -> None:
    """Check every connection out once after the server died, as requests would."""
    for _ in range(n):
        with contextlib.suppress(psycopg.Error, PoolTimeout), pool.connection(timeout=1) as conn:
            conn.execute("SELECT 1")


@needs_pg_binaries
def test_pool_waits_are_bounded_and_reconnect_right_after_an_outage(pg):
    old = ConnectionPool(pg.dsn, min_size=2, max_size=2, open=True)  # psycopg_pool's defaults
    new = Database(pg.dsn, pool_size=2, migrate=False, pool_timeout=2, connect_timeout=2)
    try:
        old.wait(10)
        new.pool.wait(10)
        pg.stop()
        _use_every_connection(old, 2)
        _use_every_connection(new.pool, 2)
        down = time.monotonic()

        # Reproduced: with psycopg_pool's default timeout a caller is still waiting after 5 s.
        def wait_old():
            with contextlib.suppress(PoolTimeout, psycopg.Error):
                old.getconn()

        waiter = threading.Thread(target=wait_old, daemon=True)
        waiter.start()
        waiter.join(5)
        assert waiter.is_alive(), "psycopg_pool's default wait (30 s) seems to have changed"
        # Fixed: the catalog's pool gives up after its own timeout.
        failed = threading.Event()

        def wait_new():
            with contextlib.suppress(PoolTimeout):
                new.pool.getconn()
                return
            failed.set()

        bounded = threading.Thread(target=wait_new, daemon=True)
        bounded.start()
        bounded.join(15)
        assert not bounded.is_alive() and failed.is_set()

        time.sleep(max(0.0, 8 - (time.monotonic() - down)))  # an 8-second outage
        pg.start()
        back = time.monotonic()
        # Fixed: attempts that failed for longer than the pool timeout are given up, so the
        # next caller starts a fresh one and gets a connection at once.
        with new.pool.connection(timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        print(f"\nnew pool: connection {time.monotonic() - back:.3f} s after the restart")
        # Reproduced: the default pool's next reconnection attempt is several seconds away
        # (backoff 1, 2, 4, 8 s): a caller right after the restart still gets nothing.
        with pytest.raises(PoolTimeout):
            old.getconn(timeout=2)
    finally:
        old.close()
        new.close()


@needs_pg_binaries
def test_keyed_requests_get_503_quickly_while_the_database_is_down_and_recover(pg, tmp_path, clean_env):
    from quivr_pipelines.service.app import create_app

    settings = _settings(tmp_path, pg.dsn, database_pool_timeout_seconds=2)
    app = create_app(settings)
    with Served(app) as served:
        key = _admin_key(pg.dsn, "quivr")
        assert _search(served.url, key).status_code == 404  # up: the key works, the KB is unknown
        pg.stop()
        started = time.monotonic()
        down = _search(served.url, key)  # bounded by the client timeout (20 s): 30 s before
        waited = time.monotonic() - started
        assert down.status_code == 503, down.text
        assert down.headers["Retry-After"] == "5"
        assert "catalog database unavailable" in down.json()["detail"]
        assert httpx.get(f"{served.url}/health", timeout=5).status_code == 200
        ready = httpx.get(f"{served.url}/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("unreachable")
        pg.start()
        answer, recovered = _poll(lambda: _search(served.url, key).status_code, lambda code: code != 503)
        assert answer == 404
        assert httpx.get(f"{served.url}/ready", timeout=10).status_code == 200
        print(f"\n503 after {waited:.2f} s with the database down; keyed requests answered again "
              f"{recovered:.2f} s after it restarted")


@needs_pg_binaries
def test_service_starts_with_the_database_down_and_recovers_by_itself(pg, tmp_path, clean_env):
    from quivr_pipelines.service.app import create_app

    pg.stop()
    app = create_app(_settings(tmp_path, pg.dsn, database_pool_timeout_seconds=2))
    with Served(app) as served:  # before: the lifespan raised, uvicorn exited with 3
        assert httpx.get(f"{served.url}/health", timeout=5).status_code == 200
        ready = httpx.get(f"{served.url}/ready", timeout=10)
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["database"].startswith("unreachable (")
        assert str(pg.port) not in ready.text and "postgres@" not in ready.text
        keyed = _search(served.url, "qvr_" + "0" * 64)
        assert keyed.status_code == 503 and keyed.headers["Retry-After"] == "5", keyed.text

        pg.start()
        _, recovered = _poll(lambda: httpx.get(f"{served.url}/ready", timeout=10).status_code,
                             lambda code: code == 200)
        key = _admin_key(pg.dsn, "quivr")  # the service applied the migrations by itself
        assert _search(served.url, key).status_code == 404
        print(f"\nready {recovered:.2f} s after the database started")


def test_service_starts_with_the_embedder_unreachable_and_recovers_by_itself(
        tmp_path, clean_env, postgres_dsn, db_schema):
    from quivr_pipelines.service.app import create_app

    stub = OpenAIStub(dimensions=8)
    port = stub.server.server_address[1]
    stub.server.server_close()  # nothing listens there: connection refused
    secret = "sk-test-" + uuid.uuid4().hex
    app = create_app(_settings(tmp_path, postgres_dsn, db_schema, embedder="openai",
                               openai_base_url=stub.url, openai_api_key=secret, openai_max_retries=0))
    with Served(app) as served:
        key = _admin_key(postgres_dsn, db_schema)
        ready = httpx.get(f"{served.url}/ready", timeout=10)
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["database"] == "ok" and checks["vector_store"] == "ok"
        assert checks["embedder"].startswith("unreachable (")
        keyed = _search(served.url, key)
        assert keyed.status_code == 503 and keyed.headers["Retry-After"] == "5", keyed.text
        assert secret not in ready.text + keyed.text

        stub.server = ThreadingHTTPServer(("127.0.0.1", port), stub.server.RequestHandlerClass)
        stub.thread = threading.Thread(target=stub.server.serve_forever, daemon=True)
        with stub:
            _, recovered = _poll(lambda: httpx.get(f"{served.url}/ready", timeout=10).status_code,
                                 lambda code: code == 200)
            assert _search(served.url, key).status_code == 404
    print(f"\nready {recovered:.2f} s after the embedding provider came up")


# -- 2. /health outside the threadpool --------------------------------------------------------------


def test_health_answers_while_slow_searches_fill_the_threadpool(tmp_path, clean_env, postgres_dsn, db_schema):
    from quivr_pipelines.service.app import create_app

    app = create_app(_settings(tmp_path, postgres_dsn, db_schema))
    app.add_api_route("/health-sync", lambda: {"status": "ok"})  # the old route: a plain def
    entered, finished = [0], [0]
    lock = threading.Lock()
    with Served(app) as served:
        key = _admin_key(postgres_dsn, db_schema)
        service = app.state.service
        original = service.search

        def slow_search(*args, **kwargs):  # a slow store, injected
            with lock:
                entered[0] += 1
            time.sleep(15)
            try:
                return original(*args, **kwargs)
            finally:
                with lock:
                    finished[0] += 1

        service.search = slow_search
        searches = [threading.Thread(target=_search, args=(served.url, key, 60), daemon=True) for _ in range(45)]
        for thread in searches:
            thread.start()
        _poll(lambda: entered[0], lambda n: n >= 35, seconds=30, every=0.05)  # the threadpool has 40

        # Reproduced: a plain `def` route waits for a free thread.
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{served.url}/health-sync", timeout=3)
        # Fixed: /health runs on the event loop, /ready on the service's own probe threads.
        started = time.monotonic()
        health = httpx.get(f"{served.url}/health", timeout=5)
        latency, done, in_flight = time.monotonic() - started, finished[0], entered[0] - finished[0]
        ready = httpx.get(f"{served.url}/ready", timeout=5)
        assert health.status_code == 200 and ready.status_code == 200
        assert done == 0, "the searches were not in flight while /health answered"
        for thread in searches:
            thread.join(120)
        print(f"\n/health {latency * 1000:.0f} ms with {in_flight} slow searches in flight")


# -- 5. header read and keep-alive timeouts --------------------------------------------------------


async def _hello(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _half_header(port: int, wait: float) -> bytes | None:
    """Send half a request header and wait; what the server sent before closing (None: still open)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        got = b""
        try:
            while chunk := sock.recv(4096):
                got += chunk
        except TimeoutError:
            return None
        return got


def test_a_client_sending_half_a_header_is_dropped():
    with Served(_hello, config_class=uvicorn.Config, timeout_keep_alive=1) as plain:
        assert _half_header(plain.port, wait=4) is None  # reproduced: uvicorn alone waits forever
    with Served(_hello, timeout_headers=1, timeout_keep_alive=1) as guarded:
        got = _half_header(guarded.port, wait=15)  # bounded: None would mean still open after 15 s
        assert got is not None and got.startswith(b"HTTP/1.1 408 ")
        assert httpx.get(f"{guarded.url}/", timeout=5).text == "ok"  # normal requests unaffected
        with socket.create_connection(("127.0.0.1", guarded.port), timeout=15) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            assert sock.recv(4096) == b""  # the idle keep-alive connection is closed by the server


# -- 6. TLS ---------------------------------------------------------------------------------------


def _self_signed(folder):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _handshake(port: int, version) -> str:
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer old versions: the server must refuse
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 constants are deprecated
        context.minimum_version = getattr(ssl.TLSVersion, version)
        context.maximum_version = getattr(ssl.TLSVersion, version)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        return tls.version()


def test_tls_serves_1_2_and_1_3_and_refuses_older_versions_and_plain_http(
        tmp_path, clean_env, postgres_dsn, db_schema, monkeypatch):
    import ssl

    from quivr_pipelines.service.app import create_app
    from quivr_pipelines_tests.service.conftest import ALPHA_DOCS, ingest, passages

    cert, key = _self_signed(tmp_path)
    settings = _settings(tmp_path, postgres_dsn, db_schema)
    ingest(settings, "alpha", dict(list(ALPHA_DOCS.items())[:2]), passages())
    # Control: this client really offers TLS 1.1 (a server whose floor is lowered accepts it), so
    # the refusals below are the server's. (uvicorn itself sets no floor; Python's default is
    # TLS 1.2 today, ServiceConfig sets it explicitly.)
    with Served(_hello, config_class=uvicorn.Config, ssl_certfile=str(cert), ssl_keyfile=str(key),
                ssl_ciphers="DEFAULT:@SECLEVEL=0") as plain:
        plain.server.config.ssl.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        assert _handshake(plain.port, "TLSv1_1") == "TLSv1.1"

    app = create_app(settings)
    with Served(app, ssl_certfile=str(cert), ssl_keyfile=str(key), ssl_ciphers="DEFAULT:@SECLEVEL=0") as served:
        assert _handshake(served.port, "TLSv1_2") == "TLSv1.2"
        assert _handshake(served.port, "TLSv1_3") == "TLSv1.3"
        for old in ("TLSv1", "TLSv1_1"):
            with pytest.raises(ssl.SSLError):  # protocol-version alert (1.1) or closed handshake (1.0)
                _handshake(served.port, old)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{served.port}/health", timeout=10)
        trusted = ssl.create_default_context(cafile=str(cert))
        assert httpx.get(f"{served.url}/health", verify=trusted, timeout=10).json() == {"status": "ok"}

        import json

        from typer.testing import CliRunner

        from quivr_pipelines.cli import app as cli

        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # how the loadtest (httpx) trusts a private CA
        result = CliRunner().invoke(cli, ["loadtest", "--url", served.url, "--kb", "alpha", "--api-key",
                                          _admin_key(postgres_dsn, db_schema), "--concurrency", "2",
                                          "--requests", "6", "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["successes"] == 6, report


@pytest.mark.parametrize("problem", ["missing", "directory", "not_pem", "half", "env_missing"])
def test_serve_refuses_unusable_tls_files_in_one_line(problem, tmp_path, clean_env, monkeypatch):
    from typer.testing import CliRunner

    from quivr_pipelines.cli import app

    cert, key = _self_signed(tmp_path)
    if problem == "env_missing":  # the environment variables are read the same way
        monkeypatch.setenv("QUIVR_SERVICE_TLS_CERT", str(cert))
        monkeypatch.setenv("QUIVR_SERVICE_TLS_KEY", str(tmp_path / "gone.pem"))
    args = {"missing": ["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(key)],
            "directory": ["--tls-cert", str(cert), "--tls-key", str(tmp_path)],
            "not_pem": ["--tls-cert", str(cert), "--tls-key", str(cert)],
            "half": ["--tls-cert", str(cert)], "env_missing": []}[problem]
    result = CliRunner().invoke(app, ["serve", "--port", str(_free_port()), *args])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "TLS" in lines[0], result.output


# -- 4. one serve per embedded store ---------------------------------------------------------------


def test_a_second_serve_on_the_same_embedded_store_refuses_to_start(tmp_path, postgres_dsn, db_schema):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith("QUIVR_") and k != "OPENAI_API_KEY"}
    env.update({"QUIVR_DATA_DIR": str(tmp_path / "data"), "QUIVR_DATABASE_URL": postgres_dsn,
                "QUIVR_DATABASE_SCHEMA": db_schema, "DO_NOT_TRACK": "1"})
    script = Path(sys.executable).with_name("quivr-pipelines")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "quivr_pipelines.cli"]
    first_port, second_port = _free_port(), _free_port()
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen([*command, "serve", "--port", str(first_port)], cwd=tmp_path, env=env,
                             stdout=log, stderr=subprocess.STDOUT)
    try:
        def health():
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{first_port}/health", timeout=2).status_code
            except httpx.TransportError:
                return None

        _poll(health, lambda code: code == 200, seconds=180)
        # Before: the second one started too and both took turns on the store on every request.
        second = subprocess.run([*command, "serve", "--port", str(second_port)], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "already serves the embedded vector store" in lines[0], second.stderr
        assert f"pid {first.pid}" in lines[0]
        assert health() == 200  # the first one is untouched
    finally:
        first.send_signal(signal.SIGTERM)
        try:
            first.wait(60)
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait(30)
        log.close()
