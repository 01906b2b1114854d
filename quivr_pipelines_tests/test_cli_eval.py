"""`search --fusion` and `eval` on any BEIR folder (both representations, --baseline), as a user
runs them (Typer's runner, real components underneath)."""

from __future__ import annotations

import json
import re

import psycopg
from typer.testing import CliRunner

from quivr_pipelines.cli import app
from quivr_pipelines_tests.core.test_evaluation import write_beir
from quivr_pipelines_tests.test_cli import _usage_error

runner = CliRunner()
QUERY = "How many points did the Panthers defense surrender?"


def _scores(output: str) -> list[float]:
    return [float(m) for m in re.findall(r"^(\d+\.\d{4})  ", output, flags=re.M)]


def test_search_fusion_option(settings_env):
    from quivr_pipelines.core.vectorstore.base import DEFAULT_FUSION
    from quivr_pipelines_tests.service.conftest import ALPHA_DOCS, ingest, passages

    ingest(settings_env, "alpha", ALPHA_DOCS, passages())
    default = runner.invoke(app, ["search", "alpha", QUERY, "--top-k", "3"])
    assert default.exit_code == 0, default.output
    assert "super-bowl" in default.output and _scores(default.output)[0] <= 2 / DEFAULT_FUSION.k + 1e-4
    sharp = runner.invoke(app, ["search", "alpha", QUERY, "--top-k", "3", "--fusion", "rrf:k=1"])
    assert sharp.exit_code == 0, sharp.output
    assert _scores(sharp.output)[0] >= 1.0  # 1 / (k + rank - 1) with k = 1
    weighted = runner.invoke(app, ["search", "alpha", QUERY, "--fusion", "rrf:k=1,dense=0,sparse=3"])
    assert weighted.exit_code == 0 and _scores(weighted.output)[0] >= 3.0
    dbsf = runner.invoke(app, ["search", "alpha", QUERY, "--fusion", "dbsf:depth=100"])
    assert dbsf.exit_code == 0 and "super-bowl" in dbsf.output
    for bad in ("rrf:k=0", "rrf:depth=5000", "dbsf:dense=2", "rrf:weight=2", "fancy"):
        _usage_error(runner.invoke(app, ["search", "alpha", QUERY, "--fusion", bad]), "--fusion")
    _usage_error(runner.invoke(app, ["search", "alpha", QUERY, "--mode", "dense", "--fusion", "rrf"]), "--fusion")


def test_eval_on_a_beir_folder_with_fusion_comparisons_and_a_baseline(settings_env, tmp_path):
    folder = write_beir(tmp_path / "tiny", "beir")
    result = runner.invoke(app, ["eval", "--data", str(folder), "--modes", "sparse", "--fusion", "rrf:k=1",
                                 "--json"])
    assert result.exit_code == 0, result.output
    saved = json.loads(result.stdout)
    runs = [(s["dataset"], s["representation"], s["mode"]) for s in saved["scores"]]
    assert runs == [("tiny", "points", "sparse"), ("tiny", "points", "hybrid"), ("tiny", "points", "hybrid")]
    assert set(saved["scores"][0]["per_query_ndcg@10"]) == {"q1", "q2"}
    (compared,) = saved["fusion_comparisons"]
    assert compared["run"] == "hybrid rrf:k=1" and compared["queries"] == 2 and 0 < compared["p_value"] <= 1
    baseline = tmp_path / "before.json"
    baseline.write_text(result.stdout)

    again = runner.invoke(app, ["eval", "--data", str(folder), "--modes", "sparse", "--fusion", "rrf:k=1",
                                "--baseline", str(baseline)])
    assert again.exit_code == 0, again.output
    assert "fusion variants against the default" in again.stdout
    against = again.stdout.split(f"against {baseline}:")[1]
    assert against.count("p = 1.000") == 3 and "+0.0000" in against  # the same code: no change

    _usage_error(runner.invoke(app, ["eval", "--data", str(folder), "--dataset", "xquad"]), "--dataset")
    (tmp_path / "old.json").write_text(json.dumps({"scores": [{"dataset": "tiny", "mode": "sparse", "fusion": "-"}]}))
    _usage_error(runner.invoke(app, ["eval", "--data", str(folder), "--baseline", str(tmp_path / "old.json")]),
                 "per-query")
    empty = tmp_path / "empty"
    empty.mkdir()
    _usage_error(runner.invoke(app, ["eval", "--data", str(empty), "--dataset", "xquad"]), "xquad_en")


def test_eval_pipeline_representation_from_the_command_line(settings_env, tmp_path, postgres_dsn):
    folder = write_beir(tmp_path / "tiny", "flat")
    try:
        result = runner.invoke(app, ["eval", "--data", str(folder), "--representation", "pipeline",
                                     "--modes", "sparse", "--json"])
        assert result.exit_code == 0, result.output
        (score,) = json.loads(result.stdout)["scores"]
        assert (score["dataset"], score["representation"], score["queries"]) == ("tiny", "pipeline", 2)
        assert score["per_query_ndcg@10"]["q2"] == 1.0  # "tea and blood pressure": MED-2 first
        assert "3 documents, 3 chunks" in result.stderr
        with psycopg.connect(postgres_dsn) as conn:  # the catalog beside the configured one
            keys = conn.execute(f'SELECT object_key FROM "{settings_env.database_schema}_eval".documents').fetchall()
        assert sorted(k for (k,) in keys) == ["MED-1.md", "MED-2.md", "doc%2E3%2Fx.md"]
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{settings_env.database_schema}_eval" CASCADE')
