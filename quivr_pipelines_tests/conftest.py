"""Real components for the tests: PostgreSQL, an S3-compatible HTTP server, Qdrant engines.

PostgreSQL: the server on 127.0.0.1:5432 when one answers (this machine kind runs one, trust
auth), otherwise an embedded one started here from the `pgserver` package. Each test gets its
own schema, dropped afterwards. S3: moto's standalone server on a loopback port.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import psycopg
import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("SCARF_NO_ANALYTICS", "true")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DOCS = SHARED_DATA / "docs"


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def postgres_dsn(tmp_path_factory) -> str:
    explicit = os.environ.get("QUIVR_TEST_DATABASE_URL")
    if explicit:
        return explicit
    if _port_open("127.0.0.1", 5432):
        for database in ("test", "postgres"):
            dsn = f"postgresql://postgres@127.0.0.1:5432/{database}"
            try:
                with psycopg.connect(dsn, connect_timeout=3):
                    return dsn
            except psycopg.OperationalError:
                continue
    from quivr_pipelines.core.catalog.database import embedded_postgres_dsn

    return embedded_postgres_dsn(tmp_path_factory.mktemp("pgdata"))


@pytest.fixture
def db_schema(postgres_dsn):
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def settings_env(tmp_path, monkeypatch, postgres_dsn, db_schema):
    """The embedded default in a temporary data dir, with the test PostgreSQL as the catalog."""
    for key in list(os.environ):
        if key.startswith("QUIVR_") and key != "QUIVR_TEST_DATABASE_URL":
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("QUIVR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("QUIVR_DATABASE_URL", postgres_dsn)
    monkeypatch.setenv("QUIVR_DATABASE_SCHEMA", db_schema)
    monkeypatch.chdir(tmp_path)
    from quivr_pipelines.settings import get_settings

    return get_settings()


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    name = f"bucket-{uuid.uuid4().hex[:10]}"
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return name
