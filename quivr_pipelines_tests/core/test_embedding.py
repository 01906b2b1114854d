"""Embedders: the offline model, the OpenAI client over real HTTP, caching and isolation."""

import os
import subprocess
import sys

import numpy as np
import pytest

from quivr_pipelines.core.catalog.database import Database
from quivr_pipelines.core.embedding.batching import embed_documents
from quivr_pipelines.core.embedding.local import LocalEmbedder
from quivr_pipelines.core.embedding.openai_embedder import OpenAIEmbedder
from quivr_pipelines_tests.openai_stub import OpenAIStub


@pytest.fixture
def db(postgres_dsn, db_schema):
    database = Database(postgres_dsn, schema=db_schema)
    yield database
    database.close()


def test_local_model_ranks_a_paraphrase_above_an_unrelated_text():
    embedder = LocalEmbedder.load()
    batch = embedder.embed(["How do I reset my password?", "Steps to change a forgotten password",
                            "The Stanley Cup is awarded to the NHL champion"])
    vectors = batch.vectors
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    assert batch.tokens == sum(embedder.count_tokens(["How do I reset my password?",
                                                      "Steps to change a forgotten password",
                                                      "The Stanley Cup is awarded to the NHL champion"]))
    again = embedder.embed(["Steps to change a forgotten password"]).vectors[0]
    assert np.allclose(again, vectors[1], atol=1e-5)  # batch composition does not change a vector


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0, reason="needs unshare -n (root)")
def test_parsing_and_embedding_work_with_the_network_cut(tmp_path):
    from quivr_pipelines_tests.conftest import DOCS

    script = (
        "from quivr_pipelines.core.parsing import parse_document\n"
        "from quivr_pipelines.core.embedding.local import LocalEmbedder\n"
        f"doc = parse_document(open({str(DOCS / 'fake-text.txt')!r}, 'rb').read(), 'fake-text.txt')\n"
        "print(LocalEmbedder.load().embed([e.text for e in doc.elements]).vectors.shape)\n"
    )
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unshare -n is not permitted here")
    done = subprocess.run(["unshare", "-n", sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "384)" in done.stdout


def test_openai_embedder_over_http_retries_a_429_with_the_clients_backoff():
    with OpenAIStub(dimensions=16) as stub:
        embedder = OpenAIEmbedder("text-embedding-3-small", api_key="sk-test", base_url=stub.url, max_retries=3)
        stub.rate_limit_next = 2
        batch = embedder.embed(["alpha", "bravo charlie"])
    assert batch.vectors.shape == (2, 16) and batch.tokens == 3
    assert len(stub.requests) == 3  # two 429s, then the answer
    assert stub.requests[-1]["auth"] == "Bearer sk-test"
    assert embedder.fingerprint == "openai:text-embedding-3-small:16"


def test_openai_dimensions_are_requested_when_configured():
    with OpenAIStub() as stub:
        embedder = OpenAIEmbedder("text-embedding-3-large", dimensions=8, api_key="k", base_url=stub.url)
        assert embedder.embed(["x"]).vectors.shape == (1, 8)
    assert stub.requests[0]["body"]["dimensions"] == 8


def test_cache_and_per_document_fallback(db):
    with OpenAIStub(dimensions=16) as stub:
        embedder = OpenAIEmbedder("m", api_key="k", base_url=stub.url, max_retries=0)
        documents = [("a", ["one", "two"]), ("bad", ["fine", "POISON pill"]), ("c", ["three", "one"])]
        outcome = embed_documents(embedder, db, documents, kb="kb", batch_size=8)
        assert set(outcome.vectors) == {"a", "c"} and "bad" in outcome.failures
        assert "HTTP 400" in outcome.failures["bad"] and "input rejected" not in outcome.failures["bad"]
        assert outcome.vectors["c"].shape == (2, 16)
        assert np.allclose(outcome.vectors["a"][0], outcome.vectors["c"][1])  # same text, same vector

        requests_before = len(stub.requests)
        again = embed_documents(embedder, db, [("a", ["one", "two"]), ("c", ["three"])], kb="kb", batch_size=8)
        assert len(stub.requests) == requests_before  # everything came from the cache
        assert again.cached_texts == 3 and again.embedded_texts == 0

    with db.transaction() as conn:
        rows = conn.execute("SELECT model, kb, inputs, prompt_tokens FROM usage_ledger ORDER BY id").fetchall()
    assert rows and all(row[0] == "m" and row[1] == "kb" for row in rows)
    assert sum(row[2] for row in rows) == outcome.embedded_texts
