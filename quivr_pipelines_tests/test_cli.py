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
    home = (settings_env.data_dir / "dagster").resolve()  # ... and the command that shows them
    assert f"See them with: DAGSTER_HOME={home} dagster dev -m quivr_pipelines.definitions" in result.output


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


def _usage_error(result, option: str) -> None:
    """Refused by the command line itself: exit 2, one `Error:` line naming the parameter."""
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and option in errors[0], result.output
    assert "Traceback" not in result.output


def _one_line_failure(result, *words: str) -> None:
    """A runtime failure: exit 1 through typer.Exit (not an exception), one line on stderr."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (result.output, result.exception)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert all(word in result.stderr for word in words), result.stderr
    assert "Traceback" not in result.output


def test_search_of_an_unknown_kb_is_one_line_on_stderr(settings_env):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "quivr_pipelines.cli", "search", "nosuchkb", "parental leave"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "'nosuchkb'" in done.stderr, done.stderr
    assert done.stdout == ""
    _one_line_failure(runner.invoke(app, ["search", "nosuchkb", "parental leave"]), "nosuchkb")


def test_search_refuses_a_bad_mode_an_empty_query_and_a_malformed_kb(settings_env):
    _usage_error(runner.invoke(app, ["search", "demo", "leave", "--mode", "bogus"]), "--mode")
    _usage_error(runner.invoke(app, ["search", "demo", ""]), "'query'")
    _usage_error(runner.invoke(app, ["search", "demo", "  \t "]), "'query'")
    _usage_error(runner.invoke(app, ["search", "No Such KB", "leave"]), "'kb'")


def test_status_of_an_unknown_kb_is_an_error(settings_env):
    for extra in ([], ["--json"]):
        result = runner.invoke(app, ["status", "--kb", "nosuchkb", *extra])
        _one_line_failure(result, "nosuchkb")
        assert result.stdout == ""


def test_keys_add_and_eval_refuse_bad_parameters_before_doing_anything(settings_env, tmp_path):
    _usage_error(runner.invoke(app, ["keys", "create", "bot", "--role", "superuser"]), "--role")
    _usage_error(runner.invoke(app, ["keys", "create", "bot", "--kb", "Bad Name"]), "--kb")
    _usage_error(runner.invoke(app, ["keys", "create", " "]), "'name'")
    assert json.loads(runner.invoke(app, ["keys", "list", "--json"]).output) == []  # nothing created
    (tmp_path / "a.txt").write_text("hello")
    _usage_error(runner.invoke(app, ["add", "Bad/Name", str(tmp_path / "a.txt")]), "'kb'")
    _usage_error(runner.invoke(app, ["eval", "--dataset", "bogus"]), "--dataset")
    _usage_error(runner.invoke(app, ["eval", "--modes", "dense,bogus"]), "--modes")
    _usage_error(runner.invoke(app, ["eval", "--modes", " , "]), "--modes")
    _one_line_failure(runner.invoke(app, ["keys", "revoke", "key_000000000000"]), "key_000000000000")
