"""The audit/usage batch writer never stalls: hostile rows are sanitised before they are queued,
a row the database still refuses is bisected out of its batch into `audit_poison`, and an
unreachable database keeps (and later writes) every row.

Reproduced first through the real service: one anonymous GET `/%00` used to hold the writer's
queue for the rest of the process (PostgreSQL refuses NUL in text), so none of the requests
after it was ever audited.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import psycopg
import pytest

from quivr_pipelines.core.catalog.database import Database
from quivr_pipelines.service import writer as writer_module
from quivr_pipelines.service.metrics import Metrics
from quivr_pipelines.service.writer import AuditRow, BatchWriter, UsageRow, sanitise
from quivr_pipelines_tests.service import throwaway_postgres
from quivr_pipelines_tests.service.conftest import ServerThread

N = 50


def rows(env, sql, params=()):
    with psycopg.connect(env["dsn"]) as conn:
        conn.execute(f'SET search_path TO "{env["schema"]}"')
        return conn.execute(sql, params).fetchall()


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


@pytest.fixture(scope="module")
def server(env):
    from quivr_pipelines.service.app import create_app
    from quivr_pipelines.settings import get_settings

    server = ServerThread(create_app(get_settings())).start()
    yield server
    server.stop()


def hostile_then_normal(server) -> list[str]:
    """One anonymous GET /%00, then N anonymous searches; the request ids are ours (X-Request-ID)."""
    ids = [uuid.uuid4().hex for _ in range(N + 1)]
    with httpx.Client(base_url=server.url, timeout=30) as c:
        c.get("/%00", headers={"X-Request-ID": ids[0]})
        for request_id in ids[1:]:
            c.post("/v1/kbs/alpha/search", json={"query": "q"}, headers={"X-Request-ID": request_id})
    return ids


def test_a_nul_path_no_longer_stalls_the_audit(server, env):
    """Before the fix: 0 of these 51 rows were ever written (flush timed out)."""
    ids = hostile_then_normal(server)
    assert server.service.writer.flush(timeout=20)
    found = dict(rows(env, "SELECT request_id, path FROM audit_log WHERE request_id = ANY(%s)", (ids,)))
    assert len(found) == N + 1
    assert found[ids[0]] == "/\\x00"  # escaped, still readable
    text = httpx.get(f"{server.url}/metrics").text
    assert metric(text, 'quivr_audit_rows_written_total{table="audit_log"}') >= N + 1
    assert metric(text, "quivr_audit_backlog_rows") == 0


def test_a_row_the_database_refuses_is_isolated_and_the_rest_written(server, env, monkeypatch):
    """The net behind the sanitiser: without it (fault injected), `/%00` is refused by
    PostgreSQL, bisected out of its batch into audit_poison, and the other N rows land."""
    monkeypatch.setattr(writer_module, "sanitise", lambda row: row)
    writer = server.service.writer
    before = writer.transactions, writer.poisoned
    ids = hostile_then_normal(server)
    assert writer.flush(timeout=20)
    monkeypatch.undo()
    found = rows(env, "SELECT request_id FROM audit_log WHERE request_id = ANY(%s)", (ids,))
    assert {r[0] for r in found} == set(ids[1:])
    poison = rows(env, "SELECT table_name, error, row_data FROM audit_poison ORDER BY id DESC LIMIT 1")[0]
    assert poison[0] == "audit_log" and "DataError" in poison[1] and "NUL" in poison[1]
    assert poison[2]["request_id"] == ids[0] and poison[2]["path"] == "/\\x00"
    assert writer.poisoned - before[1] == 1
    print(f"\nbisection: {writer.transactions - before[0]} transactions for {N + 1} rows with one refused")
    text = httpx.get(f"{server.url}/metrics").text
    assert metric(text, 'quivr_audit_rows_refused_total{table="audit_log"}') == 1


def test_sanitise_escapes_nul_and_invalid_utf8_and_bounds_every_text():
    row = AuditRow(at=None, request_id="r\x00", api_key_id=None, kb="k\udcff", action="a" * 500,
                   method="GET", path="/" + "p" * 5000, status=200, latency_ms=1.0, client="c")
    clean = sanitise(row)
    assert clean.request_id == "r\\x00" and clean.kb == "k\\udcff"
    assert len(clean.path) == 1024 and len(clean.action) == 64 and clean.method == "GET"
    assert sanitise(clean) == clean  # idempotent
    ordinary = UsageRow(kind="llm_completion", provider="openai", model="m", kb="alpha")
    assert sanitise(ordinary) is ordinary  # nothing copied on the common path


@pytest.fixture
def db(postgres_dsn, db_schema):
    database = Database(postgres_dsn, schema=db_schema)
    yield database
    database.close()


def usage(n: int, bad: set[int]) -> list[UsageRow]:
    return [UsageRow(kind="query_embedding", provider="openai", model=f"m{i}", kb="alpha",
                     prompt_tokens=2**40 if i in bad else i) for i in range(n)]


@pytest.mark.parametrize("bad", [{0}, {250}, {499}, {3, 77, 400}])
def test_bisection_writes_every_good_row_of_a_refused_batch(db, bad):
    metrics = Metrics()
    writer = BatchWriter(db, flush_seconds=60, metrics=metrics)
    try:
        for row in usage(500, bad):  # integer out of range: a DataError sanitising cannot prevent
            writer.add(row)
    finally:
        writer.close()  # drains and flushes
    with db.transaction() as conn:
        written = {r[0] for r in conn.execute("SELECT model FROM usage_ledger")}
        poison = conn.execute("SELECT table_name, error, row_data FROM audit_poison ORDER BY id").fetchall()
    assert written == {f"m{i}" for i in range(500) if i not in bad}
    assert [p[2]["model"] for p in poison] == [f"m{i}" for i in sorted(bad)]
    assert all(p[0] == "usage_ledger" and p[1].startswith("22003 NumericValueOutOfRange") for p in poison)
    assert (writer.written, writer.poisoned, writer.dropped) == (500 - len(bad), len(bad), 0)
    print(f"\n{len(bad)} refused in 500: {writer.transactions} transactions")
    text = metrics.render()[0].decode()
    assert metric(text, 'quivr_audit_rows_refused_total{table="usage_ledger"}') == len(bad)
    assert metric(text, 'quivr_audit_rows_written_total{table="usage_ledger"}') == 500 - len(bad)


def test_an_unreachable_database_keeps_the_rows_and_writes_them_once_back(db, monkeypatch):
    """Transient errors are not bisected: the batch is kept and retried, also when the outage
    starts in the middle of a bisection (rows finished before it are not written twice)."""
    metrics = Metrics()
    writer = BatchWriter(db, flush_seconds=0.05, metrics=metrics)
    real_insert = writer._insert
    calls = {"n": 0}

    def flaky(batch):  # the 3rd insert (inside the bisection) and the next 5 find the database down
        calls["n"] += 1
        if 3 <= calls["n"] < 8:
            raise psycopg.OperationalError("connection refused (injected)")
        return real_insert(batch)

    monkeypatch.setattr(writer, "_insert", flaky)
    try:
        for row in usage(40, {30}):
            writer.add(row)
        assert writer.flush(timeout=20)
    finally:
        writer.close()
    with db.transaction() as conn:
        models = [r[0] for r in conn.execute("SELECT model FROM usage_ledger")]
        poison = conn.execute("SELECT count(*) FROM audit_poison").fetchone()[0]
    assert sorted(models) == sorted(f"m{i}" for i in range(40) if i != 30)  # each exactly once
    assert poison == 1 and writer.failures == 5
    assert metric(metrics.render()[0].decode(), "quivr_audit_flush_failures_total") == 5


def test_the_poison_row_is_redacted(db, monkeypatch):
    monkeypatch.setenv("QUIVR_LLM_API_KEY", "sk-test-SECRET-in-a-refused-row")
    writer = BatchWriter(db, flush_seconds=60)
    try:
        writer.add(UsageRow(kind="x", provider="openai", model="sk-test-SECRET-in-a-refused-row",
                            kb=None, prompt_tokens=2**40))
    finally:
        writer.close()
    with db.transaction() as conn:
        data = conn.execute("SELECT row_data FROM audit_poison").fetchone()[0]
    assert "SECRET" not in json.dumps(data) and data["model"] == "[REDACTED]"


@pytest.mark.skipif(not throwaway_postgres.available(), reason="needs Debian's PostgreSQL 15 binaries")
def test_a_real_outage_keeps_every_row_and_writes_each_once_when_postgres_returns():
    """PostgreSQL of the test's own, stopped with rows queued (one of them refused by the data):
    nothing is bisected or lost while it is down; once it is back every good row is written
    exactly once and the refused one isolated."""
    pg = throwaway_postgres.ThrowawayPostgres()
    pg.start()
    db = Database(pg.dsn, schema="quivr", pool_size=2, pool_timeout=1.0, connect_timeout=1.0)
    writer = BatchWriter(db, flush_seconds=0.1)
    try:
        rows_ = usage(101, {75})
        for row in rows_[:50]:
            writer.add(row)
        assert writer.flush(timeout=20)
        pg.stop()
        for row in rows_[50:]:
            writer.add(row)
        deadline = time.monotonic() + 60
        while writer.failures < 2:
            assert time.monotonic() < deadline, "the writer never tried while the database was down"
            time.sleep(0.1)
        assert (writer.written, writer.poisoned, writer.dropped, writer.backlog) == (50, 0, 0, 51)
        pg.start()
        assert writer.flush(timeout=60)
    finally:
        writer.close()
        try:
            with db.transaction() as conn:
                models = [r[0] for r in conn.execute("SELECT model FROM usage_ledger")]
                poison = [r[0]["model"] for r in conn.execute("SELECT row_data FROM audit_poison")]
        finally:
            db.close()
            pg.close()
    assert sorted(models) == sorted(f"m{i}" for i in range(101) if i != 75) and poison == ["m75"]
    print(f"\noutage: {writer.failures} failed flushes retried, {writer.written} rows written once")
