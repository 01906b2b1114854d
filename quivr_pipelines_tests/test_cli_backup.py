"""`backup`, `backups list|keygen|prune` and `restore` as a user runs them: the embedded engine, the
test PostgreSQL, the artifact folder; one-line errors and exit codes."""

from __future__ import annotations

import json

import psycopg
from typer.testing import CliRunner

from quivr_pipelines.cli import app
from quivr_pipelines_tests.conftest import DOCS
from quivr_pipelines_tests.helpers import ingest

runner = CliRunner()


def test_backup_list_restore_and_prune_from_the_cli(settings_env, monkeypatch, tmp_path):
    folder = settings_env.inbox_dir / "handbook"
    folder.mkdir(parents=True)
    (folder / "norwich.txt").write_text((DOCS / "norwich-city.txt").read_text()[:4000])
    ingest()
    assert "no backup sets yet" in runner.invoke(app, ["backups", "list"]).output

    plain = runner.invoke(app, ["backup"])
    assert plain.exit_code == 0, plain.output
    assert "not encrypted" in plain.output and "1 collections" in plain.output

    public = runner.invoke(app, ["backups", "keygen", str(tmp_path / "age.key")])
    assert public.exit_code == 0 and public.output.startswith("age1")
    assert (tmp_path / "age.key").stat().st_mode & 0o777 == 0o600
    assert runner.invoke(app, ["backups", "keygen", str(tmp_path / "age.key")]).exit_code == 1  # not overwritten
    monkeypatch.setenv("QUIVR_BACKUP_AGE_RECIPIENTS", public.output.strip())
    encrypted = runner.invoke(app, ["backup", "--json"])
    assert encrypted.exit_code == 0, encrypted.output
    set_id = json.loads(encrypted.output[encrypted.output.index("{"):])["id"]

    listed = json.loads(runner.invoke(app, ["backups", "list", "--json"]).output)["sets"]
    assert [s["encrypted"] for s in listed] == [False, True] and listed[1]["id"] == set_id

    locked = runner.invoke(app, ["restore", set_id])
    assert locked.exit_code == 1 and "set QUIVR_BACKUP_AGE_IDENTITY" in locked.output
    assert len(locked.output.strip().splitlines()) == 1

    monkeypatch.setenv("QUIVR_BACKUP_AGE_IDENTITY_FILE", str(tmp_path / "age.key"))
    restored = runner.invoke(app, ["restore", set_id, "--target-schema", settings_env.database_schema + "_x",
                                   "--json"])
    try:
        assert restored.exit_code == 0, restored.output
        result = json.loads(restored.output[restored.output.index("{"):])
        assert result["schema"] == settings_env.database_schema + "_x"
        assert all(expected == found for expected, found in result["points"].values())
        assert list(result["aliases"]) == ["handbook"]
    finally:
        with psycopg.connect(settings_env.database_url.get_secret_value(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{settings_env.database_schema}_x" CASCADE')

    assert "no backup set nosuch" in runner.invoke(app, ["restore", "nosuch"]).output
    assert runner.invoke(app, ["restore", set_id, "--only", "everything"]).exit_code == 2
    pruned = runner.invoke(app, ["backups", "prune", "--dry-run"])
    assert pruned.exit_code == 0 and "0 to delete" in pruned.output

    monkeypatch.setenv("QUIVR_BACKUP_AGE_RECIPIENTS", "age1notakey")
    bad = runner.invoke(app, ["backup"])
    assert bad.exit_code == 1 and "recipient 1" in bad.output and "age1notakey" not in bad.output
