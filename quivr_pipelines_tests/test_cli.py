"""The command line, as a user runs it (Typer's runner, real components underneath)."""

import json

from typer.testing import CliRunner

from quivr_pipelines.cli import app
from quivr_pipelines_tests.conftest import DOCS

runner = CliRunner()


def test_demo_seeds_ingests_and_answers_a_search(settings_env):
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "seeded 3 sample documents" in result.output
    assert '"runs_failed": 0' in result.output
    assert "getting-started.md" in result.output.split("search")[1]  # the deletion paragraph ranks
    assert "demo" in result.output.split("status:")[1]
    assert (settings_env.data_dir / "dagster").exists()  # runs recorded in a real instance


def test_add_status_search_and_kb_settings(settings_env, tmp_path):
    folder = tmp_path / "upload"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "norwich.txt").write_bytes((DOCS / "norwich-city.txt").read_bytes())
    (folder / "cups.csv").write_bytes((DOCS / "stanley-cups.csv").read_bytes())
    (folder / ".hidden").write_text("not added")

    result = runner.invoke(app, ["kb", "set", "sports", "--max-characters", "800", "--new-after", "600"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["chunk_max_characters"] == 800

    result = runner.invoke(app, ["add", "sports", str(folder), "--prefix", "2026/"])
    assert result.exit_code == 0, result.output
    assert "added 2 file(s)" in result.output
    assert (settings_env.inbox_dir / "sports/2026/sub/norwich.txt").exists()

    result = runner.invoke(app, ["ingest", "--kb", "sports"])
    assert result.exit_code == 0, result.output

    result = runner.invoke(app, ["status", "--json"])
    status = json.loads(result.output)["kbs"][0]
    assert (status["kb"], status["ingested"], status["failed"]) == ("sports", 2, 0)

    result = runner.invoke(app, ["search", "sports", "Which team won the Stanley Cup?", "--top-k", "2"])
    assert result.exit_code == 0 and "2026/cups.csv" in result.output

    from quivr_pipelines_tests.helpers import all_points

    assert max(len(p.payload["text"]) for p in all_points("sports")["2026/sub/norwich.txt"]) <= 800


def test_add_refuses_a_hostile_prefix(settings_env, tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    result = runner.invoke(app, ["add", "kb1", str(tmp_path / "a.txt"), "--prefix", "../../etc"])
    assert result.exit_code == 1
    assert "hostile_key" in result.output
