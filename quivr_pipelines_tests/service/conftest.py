"""The query service for real: KBs ingested by the core pipeline from XQuAD passages, API keys in
the test PostgreSQL, and the app served by uvicorn on loopback ports (one server on the embedded
default, extractive; one answering through the `openai` client from the OpenAI-compatible stub).
Built once per module: ingestion and model loading are the slow part.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
import uvicorn

from quivr_pipelines_tests.conftest import SHARED_DATA
from quivr_pipelines_tests.openai_stub import OpenAIStub

XQUAD = SHARED_DATA / "retrieval" / "xquad_en" / "passages.jsonl"
ORIGIN = "https://app.example.com"
ALPHA_DOCS = {  # object key -> XQuAD passage id
    "sport/super-bowl-defense.txt": "Super_Bowl_50__0",
    "sport/super-bowl-game.txt": "Super_Bowl_50__1",
    "science/amazon-forest.md": "Amazon_rainforest__0",
    "science/oxygen.txt": "Oxygen__0",
}
BETA_DOCS = {"secret/beta-only.txt": "Victoria_and_Albert_Museum__0"}
LATE_DOC = ("late/apollo.txt", "Apollo_program__0")


def passages() -> dict[str, str]:
    found = {}
    for line in XQUAD.read_text().splitlines():
        row = json.loads(line)
        found[row["_id"]] = row["text"]
    return found


class ServerThread:
    """uvicorn on a loopback port in a thread: real sockets, real lifespan, clean shutdown."""

    def __init__(self, app):
        self.app = app
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the query service did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)

    @property
    def service(self):
        return self.app.state.service


def ingest(settings, kb: str, docs: dict[str, str], texts: dict[str, str]) -> None:
    from quivr_pipelines.core.factory import (
        build_embedder,
        build_object_store,
        build_vector_store,
        kb_defaults,
        open_database,
    )
    from quivr_pipelines.core.pipeline import IngestionContext, ingest_documents

    objects = build_object_store(settings)
    for key, passage_id in docs.items():
        body = texts[passage_id]
        if key.endswith(".md"):
            body = f"# {passage_id.split('__')[0].replace('_', ' ')}\n\n{body}"
        objects.put(kb, key, body.encode())
    db, store = open_database(settings), build_vector_store(settings)
    try:
        ctx = IngestionContext(store=objects, vectors=store, embedder=build_embedder(settings), db=db,
                               defaults=kb_defaults(settings), max_bytes=settings.max_upload_bytes)
        outcomes = ingest_documents(ctx, kb, sorted(docs))
        assert all(o.status == "ingested" for o in outcomes), outcomes
    finally:
        store.close()
        db.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory, postgres_dsn):
    schema = f"t_{uuid.uuid4().hex[:12]}"
    root = tmp_path_factory.mktemp("service")
    with pytest.MonkeyPatch.context() as mp:
        import os

        for key in list(os.environ):
            if key.startswith("QUIVR_") and key != "QUIVR_TEST_DATABASE_URL":
                mp.delenv(key, raising=False)
        mp.delenv("OPENAI_API_KEY", raising=False)
        mp.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
        mp.chdir(root)
        values = {
            "QUIVR_DATA_DIR": str(root / "data"), "QUIVR_DATABASE_URL": postgres_dsn,
            "QUIVR_DATABASE_SCHEMA": schema, "QUIVR_RATE_LIMIT_PER_MINUTE": "100000",
            "QUIVR_RATE_LIMIT_BURST": "100000", "QUIVR_SERVICE_CORS_ORIGINS": ORIGIN,
            "QUIVR_SERVICE_MAX_BODY_BYTES": "4096", "MAX_QUERY_LENGTH": "300",
            "QUIVR_AUDIT_FLUSH_SECONDS": "0.2",
        }
        for key, value in values.items():
            mp.setenv(key, value)
        yield {"root": root, "dsn": postgres_dsn, "schema": schema, "values": values}
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(scope="module")
def stack(env):
    """KBs alpha, beta (ingested) and gamma (another embedder's fingerprint), keys, two servers."""
    from quivr_pipelines.core.catalog import api_keys
    from quivr_pipelines.core.factory import open_database
    from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore
    from quivr_pipelines.service.app import create_app
    from quivr_pipelines.settings import get_settings

    settings = get_settings()
    texts = passages()
    ingest(settings, "alpha", ALPHA_DOCS, texts)
    ingest(settings, "beta", BETA_DOCS, texts)
    other = EmbeddedStore(settings.qdrant_dir)
    other.ensure_collection("kb_gamma__openai-other-8", 8, "openai:other-model:8")
    other.set_alias("gamma", "kb_gamma__openai-other-8")
    other.close()

    db = open_database(settings)
    past = datetime.now(UTC) - timedelta(days=1)
    keys = {
        "admin": api_keys.create_key(db, "admin", "admin")[1],
        "alpha": api_keys.create_key(db, "alpha reader", "viewer", ["alpha"])[1],
        "expired": api_keys.create_key(db, "old", "viewer", None, expires_at=past)[1],
        "limited": api_keys.create_key(db, "slow", "viewer", ["alpha"], rate_limit_per_minute=6,
                                       rate_limit_burst=2)[1],
    }
    revoked, keys["revoked"] = api_keys.create_key(db, "gone", "viewer")
    api_keys.revoke_key(db, revoked.id)
    ids = {k.name: k.id for k in api_keys.list_keys(db)}
    db.close()

    stub = OpenAIStub().__enter__()
    llm_settings = settings.model_copy(update={"llm_model": "stub-model", "llm_base_url": stub.url,
                                               "llm_max_retries": 1, "llm_price_prompt_per_million": 1.0,
                                               "llm_price_completion_per_million": 2.0})
    extractive = ServerThread(create_app(settings)).start()
    generative = ServerThread(create_app(llm_settings)).start()
    yield {"settings": settings, "keys": keys, "ids": ids, "texts": texts, "stub": stub,
           "extractive": extractive, "generative": generative}
    extractive.stop()
    generative.stop()
    stub.__exit__(None, None, None)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def client(stack):
    with httpx.Client(base_url=stack["extractive"].url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def llm_client(stack):
    with httpx.Client(base_url=stack["generative"].url, timeout=60) as c:
        yield c
