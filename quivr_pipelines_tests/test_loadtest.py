"""The load tester against the real query service over a loopback port.

One service for the module: `quivr-pipelines serve` (uvicorn) in a subprocess, over a small KB (six XQuAD passages
ingested through a Dagster run) on the embedded default, the catalog on the test PostgreSQL.
Every scenario is bounded (a few dozen requests or a few seconds); nothing asserts on speed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from quivr_pipelines import loadtest
from quivr_pipelines.loadtest import LoadTestConfig, LoadTestError

XQUAD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "retrieval" / "xquad_en"
KB = "xq"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def service(tmp_path_factory, postgres_dsn):
    """(base url, unlimited key, rate-limited key, the questions of the ingested passages)."""
    work = tmp_path_factory.mktemp("loadtest")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUIVR_") or k == "QUIVR_TEST_DATABASE_URL"}
    env.update(QUIVR_DATA_DIR=str(work / "data"), QUIVR_DATABASE_URL=postgres_dsn,
               QUIVR_DATABASE_SCHEMA=schema, QUIVR_RATE_LIMIT_PER_MINUTE="0", DO_NOT_TRACK="1")
    passages = [json.loads(line) for line in (XQUAD / "passages.jsonl").open()][:6]
    questions = [row["question"] for row in map(json.loads, (XQUAD / "qa.jsonl").open())
                 if row["passage_id"] in {p["_id"] for p in passages}]
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("QUIVR_")]:
            mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value)
        mp.chdir(work)
        import dagster as dg

        from quivr_pipelines.core.catalog import api_keys
        from quivr_pipelines.core.factory import open_database
        from quivr_pipelines.runner import ingest_now
        from quivr_pipelines.settings import get_settings

        settings = get_settings()
        inbox = settings.inbox_dir / KB
        inbox.mkdir(parents=True)
        for p in passages:
            (inbox / f"{p['_id']}.txt").write_text(p["text"] + "\n", encoding="utf-8")
        summary = ingest_now(settings, kbs=[KB], instance=dg.DagsterInstance.ephemeral())
        assert not summary.get("runs_failed"), summary
        db = open_database(settings)
        try:
            _, unlimited = api_keys.create_key(db, "loadtest", rate_limit_per_minute=0)
            _, limited = api_keys.create_key(db, "loadtest-limited", rate_limit_per_minute=6, rate_limit_burst=3)
        finally:
            db.close()
    port = _free_port()
    log = (work / "service.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "quivr_pipelines.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (work / "service.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the service did not become ready"
            time.sleep(0.3)
        yield url, unlimited, limited, questions
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _config(service, **kwargs) -> LoadTestConfig:
    url, key, _, questions = service
    base = dict(url=url, kb=KB, api_key=key, queries=questions, concurrency=4, requests=30, duration=60.0,
                timeout=30.0)
    base.update(kwargs)
    return LoadTestConfig(**base)


def _check_consistent(report: dict) -> None:
    assert report["total"] == report["successes"] + report["failures"]
    assert report["failures"] == sum(report["failures_by_status"].values())
    assert sum(row["total"] for row in report["by_kind"].values()) == report["total"]
    lat = report["latency_ms"]
    if lat["count"]:
        assert lat["count"] == report["successes"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert report["missing_request_id"] == 0  # every response carries X-Request-ID


def test_steady_sends_exactly_the_requested_count(service):
    report = loadtest.run(_config(service, scenario="steady", requests=30, concurrency=4))
    _check_consistent(report)
    assert report["total"] == 30 and report["successes"] == 30, report
    assert report["stopped_by"] == "requests"
    assert report["error_rate"] == 0 and report["rps"] > 0
    assert set(report["by_kind"]) == {"search"}
    assert report["search_server_took_ms"]["count"] == 30  # the service's own took_ms, per answer
    again = loadtest.run(_config(service, scenario="steady", requests=30, concurrency=4))
    assert again["search_cached"] == again["successes"] == 30  # same queries: result cache


def test_peak_ramps_users_up_and_down_within_its_bounds(service):
    report = loadtest.run(_config(service, scenario="peak", requests=40, concurrency=6, duration=4.0))
    _check_consistent(report)
    assert 0 < report["total"] <= 40
    assert report["failures"] == 0, report["failures_by_status"]
    assert 1 <= report["peak_users"] <= 6


def test_mix_covers_searches_asks_and_streams(service):
    report = loadtest.run(_config(service, scenario="mix", requests=40, concurrency=4,
                                  weights={"search": 1, "complex": 1, "ask": 1, "stream": 1}))
    _check_consistent(report)
    assert report["total"] == 40
    assert report["failures"] == 0, report["failures_by_status"]
    assert set(report["by_kind"]) == {"search", "complex", "ask", "stream"}
    ttft = report["time_to_first_token_ms"]
    assert ttft["count"] == report["by_kind"]["stream"]["successes"] > 0
    assert ttft["max"] <= report["by_kind"]["stream"]["latency_ms"]["max"]


def test_rate_limited_key_gets_429s_counted_separately(service):
    _, _, limited, _ = service
    report = loadtest.run(_config(service, api_key=limited, scenario="steady", requests=20, concurrency=2))
    _check_consistent(report)
    assert report["total"] == 20
    assert report["rate_limited"] == report["failures_by_status"].get("429", 0) > 0
    assert report["rate_limited_with_retry_after"] == report["rate_limited"]
    assert report["successes"] >= 1  # the burst went through
    assert report["error_rate"] == round(report["failures"] / 20, 4)


def test_duration_bound_stops_an_unbounded_count(service):
    report = loadtest.run(_config(service, scenario="steady", requests=10**9, duration=1.5, concurrency=2,
                                  timeout=10.0))
    _check_consistent(report)
    assert report["stopped_by"] == "duration"
    assert 0 < report["total"] < 10**9
    assert report["elapsed_s"] < 1.5 + 10.0  # stopped: only in-flight requests finished after the bound


def test_wrong_key_is_reported_as_401_failures(service):
    report = loadtest.run(_config(service, api_key="qvr_not-a-key", requests=5, concurrency=1))
    _check_consistent(report)
    assert report["failures_by_status"] == {"401": 5} and report["rate_limited"] == 0


def test_requests_over_the_timeout_are_counted_as_timeouts(service):
    report = loadtest.run(_config(service, requests=4, concurrency=2, timeout=0.0005))
    _check_consistent(report)
    assert report["failures_by_status"] == {"timeout": 4} and report["latency_ms"] == {"count": 0}


def test_cli_json_output_never_shows_the_key(service, monkeypatch, tmp_path):
    from quivr_pipelines.cli import app

    url, key, _, questions = service
    queries = tmp_path / "q.txt"
    queries.write_text("\n".join(questions[:5]) + "\n")
    monkeypatch.setenv("QUIVR_LOADTEST_API_KEY", key)
    result = CliRunner().invoke(app, ["loadtest", "--url", url, "--kb", KB, "--scenario", "mix",
                                      "--requests", "12", "--concurrency", "3", "--queries", str(queries),
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert key not in result.output
    report = json.loads(result.output)
    _check_consistent(report)
    assert report["total"] == 12 and report["successes"] == 12

    text = CliRunner().invoke(app, ["loadtest", "--url", url, "--kb", KB, "--requests", "5",
                                    "--queries", str(queries)])
    assert text.exit_code == 0, text.output
    assert "p50" in text.output and "p99" in text.output and key not in text.output


# -- without a service ---------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "file:///etc/passwd", "127.0.0.1:8000", "http://", "gopher://x"])
def test_refuses_non_http_urls(url):
    with pytest.raises(LoadTestError):
        loadtest.run(LoadTestConfig(url=url, kb=KB, queries=["q"]))


def test_cli_refuses_bad_options_without_sending_anything():
    from quivr_pipelines.cli import app

    result = CliRunner().invoke(app, ["loadtest", "--url", "file:///tmp/x", "--kb", KB, "--api-key", "qvr_secret"])
    assert result.exit_code == 2 and "http(s)" in result.output and "qvr_secret" not in result.output
    result = CliRunner().invoke(app, ["loadtest", "--url", "http://127.0.0.1:9", "--kb", KB,
                                      "--weights", "search=x"])
    assert result.exit_code == 2
    result = CliRunner().invoke(app, ["loadtest", "--url", "http://127.0.0.1:9", "--kb", KB, "--mode", "fuzzy"])
    assert result.exit_code == 2 and "--mode" in result.output


def test_unreachable_service_ends_with_connection_errors():
    report = loadtest.run(LoadTestConfig(url=f"http://127.0.0.1:{_free_port()}", kb=KB, queries=["q"],
                                         requests=6, concurrency=2, timeout=5))
    _check_consistent(report)
    assert report["failures_by_status"] == {"connection_error": 6} and report["error_rate"] == 1.0


def test_percentiles_are_nearest_rank_and_ordered():
    values = [float(v) for v in range(1, 101)]
    assert [loadtest.percentile(values, p) for p in (50, 95, 99, 100)] == [50.0, 95.0, 99.0, 100.0]
    assert loadtest.percentile([7.0], 99) == 7.0 and loadtest.percentile([], 50) is None


def test_queries_from_jsonl_text_or_builtin(tmp_path):
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text('{"question": "a?"}\n{"query": "b?"}\n\n{"text": "c?"}\n')
    assert loadtest.load_queries(jsonl) == ["a?", "b?", "c?"]
    plain = tmp_path / "q.txt"
    plain.write_text("one\n\ntwo\n")
    assert loadtest.load_queries(plain) == ["one", "two"]
    default = loadtest.load_queries(None)
    assert default and all(isinstance(q, str) for q in default)
