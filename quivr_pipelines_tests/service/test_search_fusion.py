"""Per-request fusion and the top_k cap of evaluation keys, over real HTTP (the module's stack:
KBs ingested by the core pipeline, keys in the test PostgreSQL, uvicorn on loopback)."""

from __future__ import annotations

import pytest

from quivr_pipelines.core.vectorstore.base import DEFAULT_FUSION
from quivr_pipelines_tests.service.conftest import auth

URL = "/v1/kbs/alpha/search"
QUERY = "How many points did the Panthers defense surrender?"


@pytest.fixture(scope="module")
def eval_key(stack):
    from quivr_pipelines.core.catalog import api_keys
    from quivr_pipelines.core.factory import open_database

    db = open_database(stack["settings"])
    try:
        key, raw = api_keys.create_key(db, "evaluation", "viewer", ["alpha"], evaluation=True)
    finally:
        db.close()
    assert key.evaluation
    return raw


def _search(client, key, **body):
    return client.post(URL, headers=auth(key), json={"query": QUERY, **body})


def test_fusion_is_chosen_per_request_and_is_part_of_the_cache_key(client, stack):
    key = stack["keys"]["admin"]
    default = _search(client, key, top_k=3)
    assert default.status_code == 200, default.text
    # RRF scores are sum(w / (k + rank - 1)): the default's top hit is at most 2/k, k=1's at least 1/1
    top = default.json()["results"][0]["score"]
    assert top <= 2 / DEFAULT_FUSION.k + 1e-6
    sharp = _search(client, key, top_k=3, fusion={"method": "rrf", "k": 1})
    assert sharp.status_code == 200 and sharp.json()["cached"] is False  # not the default's entry
    assert sharp.json()["results"][0]["score"] >= 1.0
    assert _search(client, key, top_k=3, fusion={"k": 1}).json()["cached"] is True
    weighted = _search(client, key, top_k=3, fusion={"k": 1, "dense_weight": 0, "sparse_weight": 2})
    assert weighted.json()["cached"] is False and weighted.json()["results"][0]["score"] >= 2.0
    dbsf = _search(client, key, top_k=3, fusion={"method": "dbsf", "depth": 100})
    assert dbsf.status_code == 200 and dbsf.json()["cached"] is False
    # the default written out is the default: the same entry
    assert _search(client, key, top_k=3, fusion={"method": "rrf", "k": DEFAULT_FUSION.k}).json()["cached"] is True
    ask = client.post("/v1/kbs/alpha/ask", headers=auth(key),
                      json={"query": QUERY, "top_k": 2, "fusion": {"method": "dbsf"}})
    assert ask.status_code == 200 and ask.json()["citations"]


@pytest.mark.parametrize("fusion, message", [
    ({"k": 0}, "greater than or equal to 1"),
    ({"k": "20"}, "valid integer"),
    ({"dense_weight": -1}, "greater than or equal to 0"),
    ({"dense_weight": "1"}, "must be a number"),
    ({"dense_weight": 0, "sparse_weight": 0}, "cannot both be 0"),
    ({"method": "dbsf", "sparse_weight": 0.5}, "dbsf fusion takes no weights"),
    ({"method": "bm25"}, "'rrf' or 'dbsf'"),
    ({"depth": 0}, "greater than or equal to 1"),
    ({"depth": 1001}, "less than or equal to 1000"),
    ({"alpha": 0.5}, "'fusion', 'alpha'"),  # the unknown field inside fusion, named
    ("rrf:k=20", "valid dictionary"),
])
def test_bad_fusion_is_422_with_the_reason(client, stack, fusion, message):
    response = _search(client, stack["keys"]["admin"], fusion=fusion)
    assert response.status_code == 422, response.text
    assert message in str(response.json()["detail"])


def test_fusion_with_a_non_hybrid_mode_is_422(client, stack):
    response = _search(client, stack["keys"]["admin"], mode="dense", fusion={"k": 20})
    assert response.status_code == 422
    assert "fusion applies to hybrid search only, not mode 'dense'" in str(response.json()["detail"])


def test_top_k_above_50_needs_an_evaluation_key(client, stack, eval_key):
    ordinary = stack["keys"]["alpha"]
    assert _search(client, ordinary, top_k=50).status_code == 200
    refused = _search(client, ordinary, top_k=51)
    assert refused.status_code == 403
    detail = refused.json()["detail"]
    assert "top_k 51 is above 50" in detail and "evaluation" in detail and stack["ids"]["alpha reader"] in detail
    ask = client.post("/v1/kbs/alpha/ask", headers=auth(ordinary), json={"query": QUERY, "top_k": 60})
    assert ask.status_code == 403 and "top_k 60 is above 50" in ask.json()["detail"]

    deep = _search(client, eval_key, top_k=100)
    assert deep.status_code == 200, deep.text
    assert 0 < len(deep.json()["results"]) <= 100
    too_deep = _search(client, eval_key, top_k=101)
    assert too_deep.status_code == 422 and "less than or equal to 100" in str(too_deep.json()["detail"])
    # the evaluation capability widens top_k only: KB scoping still holds
    other = client.post("/v1/kbs/beta/search", headers=auth(eval_key), json={"query": QUERY})
    assert other.status_code == 403


def test_keys_create_evaluation_option(stack):
    from typer.testing import CliRunner

    from quivr_pipelines.cli import app

    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "eval bot", "--kb", "alpha", "--evaluation"])
    assert created.exit_code == 0, created.output
    assert "(viewer, evaluation, KBs: alpha" in created.output
    listed = runner.invoke(app, ["keys", "list", "--json"])
    rows = {row["name"]: row for row in __import__("json").loads(listed.output)}
    assert rows["eval bot"]["evaluation"] is True and rows["alpha reader"]["evaluation"] is False
