"""`quivr-pipelines serve` on the embedded default, stopped the way supervisors stop it (SIGTERM):
the embedded PostgreSQL it started must stop with it, as it does on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_sigterm_stops_serve_and_its_embedded_postgres(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUIVR_") and k != "OPENAI_API_KEY"}
    env.update({"QUIVR_DATA_DIR": str(tmp_path / "data"), "DO_NOT_TRACK": "1"})
    pgdata = tmp_path / "data" / "postgres"
    port = _free_port()
    script = Path(sys.executable).with_name("quivr-pipelines")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "quivr_pipelines.cli"]
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen([*command, "serve", "--port", str(port)], cwd=tmp_path, env=env,
                             stdout=log, stderr=subprocess.STDOUT)
    postmaster = None
    try:
        deadline = time.monotonic() + 180
        while True:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve did not answer /health in time"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        postmaster = _postmaster_pid(pgdata)
        assert postmaster and _alive(postmaster), "no embedded postmaster for the data dir"

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(60) == 128 + signal.SIGTERM, (tmp_path / "serve.log").read_text()
        deadline = time.monotonic() + 10  # pg_ctl stop -w returned before serve exited
        while _alive(postmaster) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(postmaster), "the embedded PostgreSQL outlived serve"
        assert _postmaster_pid(pgdata) is None  # postmaster.pid removed by a clean stop
        assert "service_stopped" in (tmp_path / "serve.log").read_text()  # a graceful shutdown first
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(30)
        if postmaster and _alive(postmaster):  # the server this test started, by its pid
            os.kill(postmaster, signal.SIGTERM)
        log.close()
