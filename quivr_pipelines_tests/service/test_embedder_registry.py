"""The embedder registry (issue 11): specs, matching a collection's fingerprint to a configured
embedder, and the query service and CLI `search` serving a KB whose alias moved to another
model's collection without a restart. Real components: the test PostgreSQL, the embedded store,
the service over HTTP (uvicorn on loopback), the OpenAI-compatible stub as the second model
(16 dimensions, against the local model's 384). The only faults are the stub's own."""

from __future__ import annotations

import threading

import httpx
import psycopg
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from quivr_pipelines.core.embedding.registry import (
    EmbedderRegistry,
    EmbedderSpec,
    build_embedder,
    parse_spec,
)
from quivr_pipelines_tests.openai_stub import OpenAIStub
from quivr_pipelines_tests.service.conftest import ServerThread, auth, ingest, passages

LOCAL_FP = "local:all-MiniLM-L6-v2:384"
STUB_MODEL = "stub-embed"
STUB_FP = f"openai:{STUB_MODEL}:16"
OLD_DOCS = {"sport/super-bowl-defense.txt": "Super_Bowl_50__0", "science/oxygen.txt": "Oxygen__0"}
NEW_DOCS = {"new/apollo.txt": "Apollo_program__0", "new/amazon.txt": "Amazon_rainforest__0"}
APOLLO_Q = "Apollo program moon landing"


# -- specs -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "spec", "label"), [
    ("local", EmbedderSpec("local", "all-MiniLM-L6-v2"), "local"),
    (" openai:text-embedding-3-small ", EmbedderSpec("openai", "text-embedding-3-small"),
     "openai:text-embedding-3-small"),
    ("openai:text-embedding-3-large:1024", EmbedderSpec("openai", "text-embedding-3-large", 1024),
     "openai:text-embedding-3-large:1024"),
    ("openai:text-embedding-3-large:1024@http://h:8000/v1",
     EmbedderSpec("openai", "text-embedding-3-large", 1024, "http://h:8000/v1"),
     "openai:text-embedding-3-large:1024@http://h:8000/v1"),
    ("openai:bge-m3@https://vllm.internal/v1", EmbedderSpec("openai", "bge-m3", None, "https://vllm.internal/v1"),
     "openai:bge-m3@https://vllm.internal/v1"),
    # Ollama names carry a tag after a colon: only a numeric last part is DIMS.
    ("openai:nomic-embed-text:latest", EmbedderSpec("openai", "nomic-embed-text:latest"),
     "openai:nomic-embed-text:latest"),
    ("openai:nomic-embed-text:latest:768", EmbedderSpec("openai", "nomic-embed-text:latest", 768),
     "openai:nomic-embed-text:latest:768"),
])
def test_parse_spec_accepts_the_documented_forms_and_label_writes_them_back(text, spec, label):
    assert parse_spec(text) == spec
    assert spec.label() == label
    assert parse_spec(label) == spec


def test_label_leaves_a_url_password_out():
    spec = parse_spec("openai:m:8@http://user:hunter2-secret@h:8000/v1")
    assert spec.base_url == "http://user:hunter2-secret@h:8000/v1"  # still used to connect
    assert spec.label() == "openai:m:8@http://h:8000/v1"


@pytest.mark.parametrize("text", [
    "", "   ", "openai", "openai:", "openai:m:", "openai::16", "openai:m:0", "cohere:embed-v3", "local:other",
    "OpenAI:m", "local@http://h/v1", "openai:m@", "openai:m@ftp://h/v1", "openai:m@not a url",
    "openai:m@ftp://user:hunter2-secret@h",
])
def test_parse_spec_refuses_other_forms_in_one_line_naming_the_accepted_ones(text):
    with pytest.raises(ValueError) as refused:
        parse_spec(text)
    message = str(refused.value)
    assert "\n" not in message and "hunter2-secret" not in message
    assert all(form in message for form in ("`local`", "`openai:MODEL`", "`openai:MODEL:DIMS`", "`@BASE_URL`"))


def test_quivr_embedders_is_validated_when_settings_load(monkeypatch):
    from quivr_pipelines.settings import Settings

    monkeypatch.setenv("QUIVR_EMBEDDERS", "local, openai:text-embedding-3-large:1024@http://h:8000/v1,")
    assert Settings().embedders.startswith("local")
    monkeypatch.setenv("QUIVR_EMBEDDERS", "local,cohere:embed-v3")
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert "QUIVR_EMBEDDERS: embedder spec 'cohere:embed-v3' is not one of" in str(refused.value)


# -- matching ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stub():
    with OpenAIStub(dimensions=16) as server:
        yield server


def _settings(**values):
    from quivr_pipelines.settings import Settings

    return Settings(openai_max_retries=0, **values)


def test_for_fingerprint_finds_each_configured_embedder_without_calling_a_provider(stub):
    from quivr_pipelines.core.embedding.local import LocalEmbedder
    from quivr_pipelines.core.embedding.openai_embedder import OpenAIEmbedder

    settings = _settings(embedders=f"openai:text-embedding-3-small@{stub.url},openai:fixed:16@{stub.url}")
    before = len(stub.requests)
    registry = EmbedderRegistry(settings)  # QUIVR_EMBEDDER unset: the local model is the default
    assert isinstance(registry.default, LocalEmbedder)
    assert registry.configured() == ["local", f"openai:text-embedding-3-small@{stub.url}",
                                     f"openai:fixed:16@{stub.url}"]
    assert registry.for_fingerprint(LOCAL_FP) is registry.default

    # A dims-less openai spec matches any dimensions, built with them requested, one instance each.
    small_16 = registry.for_fingerprint("openai:text-embedding-3-small:16")
    assert isinstance(small_16, OpenAIEmbedder) and small_16.requested_dimensions == 16
    assert small_16.fingerprint == "openai:text-embedding-3-small:16"
    assert registry.for_fingerprint("openai:text-embedding-3-small:16") is small_16
    small_512 = registry.for_fingerprint("openai:text-embedding-3-small:512")
    assert small_512 is not small_16 and small_512.requested_dimensions == 512
    # A spec with fixed dimensions matches those only.
    assert registry.for_fingerprint("openai:fixed:16").requested_dimensions == 16
    for unserved in ("openai:fixed:8", "openai:text-embedding-3-large:16", "local:all-MiniLM-L6-v2:768",
                     "local:other-model:384", "cohere:embed:16", "openai:text-embedding-3-small", "", "garbage"):
        assert registry.for_fingerprint(unserved) is None, unserved
    assert len(stub.requests) == before  # matching and building made no call

    # The embedders built really are the stub's, with the dimensions the collection needs.
    assert small_16.embed(["hello"]).vectors.shape == (1, 16)
    assert stub.requests[-1]["body"]["dimensions"] == 16 and stub.requests[-1]["path"].startswith("/v1/")


def test_for_spec_builds_unlisted_specs_once_and_the_default_is_itself():
    registry = EmbedderRegistry(_settings())
    spec = parse_spec("openai:unlisted:8@http://127.0.0.1:9/v1")
    built = registry.for_spec(spec)
    assert registry.for_spec(spec) is built and built.fingerprint == "openai:unlisted:8"
    assert registry.for_spec(parse_spec("local")) is registry.default
    assert registry.for_fingerprint("openai:unlisted:8") is None  # built on demand, but not configured


def test_for_fingerprint_is_one_instance_under_concurrent_first_use(stub):
    registry = EmbedderRegistry(_settings(embedders=f"openai:{STUB_MODEL}@{stub.url}"))
    barrier, found = threading.Barrier(8), []

    def look_up():
        barrier.wait()
        found.append(registry.for_fingerprint(STUB_FP))

    threads = [threading.Thread(target=look_up) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 8 and len({id(e) for e in found}) == 1 and found[0] is not None


def test_an_openai_default_matches_its_probed_dimensions_and_other_ones_on_request(stub):
    settings = _settings(embedder="openai", openai_embedding_model=STUB_MODEL, openai_base_url=stub.url)
    registry = EmbedderRegistry(settings)
    assert registry.default.fingerprint == STUB_FP  # the probe the service makes at start-up
    assert registry.for_fingerprint(STUB_FP) is registry.default
    shorter = registry.for_fingerprint(f"openai:{STUB_MODEL}:8")  # QUIVR_EMBEDDER's spec has no DIMS
    assert shorter is not registry.default and shorter.embed(["x"]).vectors.shape == (1, 8)
    assert registry.for_fingerprint(LOCAL_FP) is not None  # the local model is always configured


# -- the query service, the alias moved under it ---------------------------------------------
def _stub_collection(settings, stub_url: str, kb: str, docs: dict[str, str], texts: dict[str, str]) -> str:
    """A KB's collection embedded by the stub model, written with the store API (as a
    re-embedding would build it), without touching the alias. Returns its name."""
    from quivr_pipelines.core import sparse
    from quivr_pipelines.core.keys import point_id
    from quivr_pipelines.core.vectorstore.base import PointRecord
    from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore

    embedder = build_embedder(parse_spec(f"openai:{STUB_MODEL}:16@{stub_url}"), settings)
    name = f"kb_{kb}__openai-{STUB_MODEL}-16"
    bodies = {key: texts[pid] for key, pid in docs.items()}
    vectors = embedder.embed(list(bodies.values())).vectors
    store = EmbeddedStore(settings.qdrant_dir)
    try:
        store.ensure_collection(name, 16, embedder.fingerprint)
        store.replace_documents(name, [
            (kb, key, [PointRecord(id=point_id(kb, key, 0), dense=vector.tolist(), sparse=sparse.document_vector(text),
                                   payload={"kb": kb, "document_key": key, "chunk_index": 0, "text": text,
                                            "content_type": "text/plain", "embedding_model": embedder.fingerprint})])
            for (key, text), vector in zip(bodies.items(), vectors, strict=True)])
    finally:
        store.close()
    return name


def _set_alias(settings, kb: str, collection: str) -> None:
    from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore

    store = EmbeddedStore(settings.qdrant_dir)
    try:
        store.set_alias(kb, collection)
    finally:
        store.close()


@pytest.fixture(scope="module")
def served(env, stub):
    """KB delta ingested with the local model (a stub-model collection built beside it), KB
    epsilon on a stub-model collection, KB omega on a model nobody configured; one service."""
    from quivr_pipelines.core.catalog import api_keys
    from quivr_pipelines.core.factory import open_database
    from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore
    from quivr_pipelines.service.app import create_app

    settings = _settings(embedders=f"openai:{STUB_MODEL}@{stub.url}")
    texts = passages()
    ingest(settings, "delta", OLD_DOCS, texts)
    new_collection = _stub_collection(settings, stub.url, "delta", NEW_DOCS, texts)
    _set_alias(settings, "epsilon", _stub_collection(settings, stub.url, "epsilon", NEW_DOCS, texts))
    store = EmbeddedStore(settings.qdrant_dir)
    store.ensure_collection("kb_omega__openai-nobody-8", 8, "openai:nobody-configured-this:8")
    store.set_alias("omega", "kb_omega__openai-nobody-8")
    store.close()
    db = open_database(settings)
    key = api_keys.create_key(db, "registry admin", "admin")[1]
    db.close()
    server = ServerThread(create_app(settings)).start()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield {"settings": settings, "client": client, "key": key, "server": server,
               "new_collection": new_collection}
    server.stop()


def _search(served, kb: str, query: str, mode: str = "hybrid") -> httpx.Response:
    return served["client"].post(f"/v1/kbs/{kb}/search", headers=auth(served["key"]),
                                 json={"query": query, "top_k": 5, "mode": mode})


def _embedding_requests(stub, query: str) -> list[dict]:
    return [r for r in stub.requests if r["path"].endswith("/embeddings") and r["body"]["input"] == [query]]


def test_a_swapped_alias_is_served_by_the_new_model_without_restart(served, stub):
    service = served["server"].service
    before = _search(served, "delta", APOLLO_Q)
    assert before.status_code == 200, before.text
    assert before.json()["results"] and {r["document_key"] for r in before.json()["results"]} <= set(OLD_DOCS)
    assert not _embedding_requests(stub, APOLLO_Q)  # the local model embedded it

    _set_alias(served["settings"], "delta", served["new_collection"])  # the re-embedding's swap

    for mode in ("hybrid", "dense"):
        after = _search(served, "delta", APOLLO_Q, mode)
        assert after.status_code == 200, after.text
        keys = [r["document_key"] for r in after.json()["results"]]
        assert keys and set(keys) <= set(NEW_DOCS), keys  # from the new collection only
        assert after.json()["cached"] is False or mode == "dense"
    hybrid = _search(served, "delta", APOLLO_Q).json()
    assert hybrid["cached"] is True and hybrid["results"][0]["document_key"] == "new/apollo.txt"
    sent = _embedding_requests(stub, APOLLO_Q)
    assert len(sent) == 1  # embedded once by the stub model, then its cached vector
    assert sent[0]["body"]["model"] == STUB_MODEL and sent[0]["body"]["dimensions"] == 16
    assert served["server"].service is service  # the same process, no restart

    # The usage ledger and the metrics name the model that embedded the query.
    assert service.writer.flush()
    settings = served["settings"]
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        conn.execute(f'SET search_path TO "{settings.database_schema}"')
        rows = conn.execute("SELECT provider, model, prompt_tokens, cached_inputs FROM usage_ledger"
                            " WHERE kind = 'query_embedding' AND kb = 'delta'").fetchall()
    assert ("local", "all-MiniLM-L6-v2") in {r[:2] for r in rows}
    stub_rows = [r for r in rows if r[:2] == ("openai", STUB_MODEL)]
    assert any(r[2] > 0 and r[3] == 0 for r in stub_rows) and any(r[3] == 1 for r in stub_rows)
    metrics = served["client"].get("/metrics").text
    assert f'quivr_embedding_tokens_total{{model="{STUB_MODEL}"}}' in metrics


def test_a_fingerprint_no_configured_embedder_produces_is_still_409(served):
    for path in ("/v1/kbs/omega/search", "/v1/kbs/omega/ask"):
        refused = served["client"].post(path, headers=auth(served["key"]), json={"query": "anything"})
        assert refused.status_code == 409, refused.text
        detail = refused.json()["detail"]
        assert set(refused.json()) == {"detail"}
        assert "openai:nobody-configured-this:8" in detail and LOCAL_FP in detail
        assert f"openai:{STUB_MODEL}" in detail and "QUIVR_EMBEDDERS" in detail
        assert "127.0.0.1" not in detail  # configured base URLs are not shown to API clients


def test_a_failing_provider_of_a_kb_is_502_or_503_not_500(served, stub):
    stub.fail_next(500, endpoint="/embeddings", message="boom at sk-proj-not-shown")
    failed = _search(served, "epsilon", "a query for a failing provider")
    assert failed.status_code == 502, failed.text
    assert failed.json()["detail"].startswith("the embedding provider (openai) failed: HTTP 500")
    assert "boom" not in failed.text

    stub.rate_limit_next = 1
    limited = _search(served, "epsilon", "a query for a rate-limited provider")
    assert limited.status_code == 503 and limited.headers["Retry-After"], limited.text

    recovered = _search(served, "epsilon", "a query for a rate-limited provider")
    assert recovered.status_code == 200 and recovered.json()["results"]
    ready = served["client"].get("/ready")
    assert ready.status_code == 200  # readiness is the default embedder's, untouched


# -- the CLI `search` takes the same route ----------------------------------------------------
def test_cli_search_resolves_the_kb_embedder_by_fingerprint(served, stub, monkeypatch):
    from quivr_pipelines.cli import app

    monkeypatch.setenv("QUIVR_EMBEDDERS", f"openai:{STUB_MODEL}@{stub.url}")
    monkeypatch.setenv("QUIVR_OPENAI_MAX_RETRIES", "0")
    runner = CliRunner()
    query = "Amazon rainforest from the command line"
    found = runner.invoke(app, ["search", "epsilon", query, "--mode", "dense"])
    assert found.exit_code == 0, found.output
    assert "new/amazon.txt" in found.output
    assert _embedding_requests(stub, query)[0]["body"]["dimensions"] == 16

    refused = runner.invoke(app, ["search", "omega", "anything"])
    assert refused.exit_code == 1
    assert "openai:nobody-configured-this:8" in refused.output and "QUIVR_EMBEDDERS" in refused.output

    stub.fail_next(500, endpoint="/embeddings")
    failed = runner.invoke(app, ["search", "epsilon", "the CLI and a failing provider"])
    assert failed.exit_code == 1 and "the embedding provider (openai) failed: HTTP 500" in failed.output
    assert "Traceback" not in failed.output

    monkeypatch.delenv("QUIVR_EMBEDDERS")  # without the stub model configured: the clear refusal
    unconfigured = runner.invoke(app, ["search", "epsilon", query])
    assert unconfigured.exit_code == 1 and STUB_FP in unconfigured.output
