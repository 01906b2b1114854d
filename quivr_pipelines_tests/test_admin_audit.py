"""Administrative operations leave an `admin_audit` row (core/audit.py): `keys create` and
`keys revoke` from the CLI (actor "cli:<os user>"), the prune job (actor "dagster run <id>").
Before issue 9 none of them left any trace but the key table itself."""

from __future__ import annotations

import getpass

import dagster as dg
from typer.testing import CliRunner

from quivr_pipelines.cli import app
from quivr_pipelines.core import audit
from quivr_pipelines.core.factory import open_database
from quivr_pipelines.definitions import defs
from quivr_pipelines.settings import get_settings
from quivr_pipelines_tests.defs.test_sensor import Tick, put

runner = CliRunner()


def audit_rows(action: str) -> list[dict]:
    db = open_database(get_settings())
    try:
        return audit.rows(db, action)
    finally:
        db.close()


def test_keys_create_and_revoke_are_audited(settings_env):
    created = runner.invoke(app, ["keys", "create", "ci bot", "--role", "editor", "--kb", "alpha"])
    assert created.exit_code == 0, created.output
    key_id = created.stdout.split()[1]
    raw = created.stdout.strip().splitlines()[-1]
    assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 0
    assert runner.invoke(app, ["keys", "revoke", "key_000000000000"]).exit_code == 1

    actor = f"cli:{getpass.getuser()}"
    (create,) = audit_rows("keys.create")
    assert (create["actor"], create["target"], create["outcome"]) == (actor, key_id, "ok")
    assert create["detail"]["role"] == "editor" and create["detail"]["kbs"] == ["alpha"]
    assert raw.startswith("qvr_") and raw not in str(create)  # never the key
    revokes = audit_rows("keys.revoke")
    assert [(r["target"], r["outcome"]) for r in revokes] == [("key_000000000000", "not_found"), (key_id, "ok")]
    assert all(r["actor"] == actor and r["at"] is not None for r in revokes)


def test_record_cleans_and_redacts_and_never_raises(settings_env, monkeypatch):
    monkeypatch.setenv("QUIVR_QDRANT_API_KEY", "qdrant-secret-value")
    db = open_database(get_settings())
    try:
        assert audit.record(db, actor="cli:a\x00b", action="restore", target="kb\udcff",
                            outcome="ok", detail={"note": "used qdrant-secret-value\x00"})
        row = audit.rows(db, "restore")[0]
        assert (row["actor"], row["target"]) == ("cli:a\\x00b", "kb\\udcff")
        assert row["detail"] == {"note": "used [REDACTED]\\x00"}
    finally:
        db.close()
    assert audit.record(db, actor="cli:x", action="restore", target=None, outcome="ok") is False  # pool closed


def test_prune_is_audited_with_its_run_and_a_dry_run_is_not(settings_env, monkeypatch):
    monkeypatch.setenv("QUIVR_SYNC_DELETE_AFTER_MISSES", "1")
    monkeypatch.setenv("QUIVR_SYNC_DELETE_DRY_RUN", "true")
    put(settings_env, "kb1", "gone.txt")
    put(settings_env, "kb1", "kept.txt")
    tick = Tick()
    tick.sync()
    (settings_env.inbox_dir / "kb1" / "gone.txt").unlink()
    tick.sync()  # a dry-run prune: reported, not audited
    assert audit_rows("prune") == []

    monkeypatch.setenv("QUIVR_SYNC_DELETE_DRY_RUN", "false")
    tick.definitions = defs()  # resources read the settings when the definitions are built
    tick.sync()
    runs = tick.instance.get_runs(dg.RunsFilter(job_name="prune_documents_job"))
    (row,) = audit_rows("prune")
    assert row["actor"] == f"dagster run {runs[0].run_id}" and runs[0].is_success
    assert (row["target"], row["outcome"]) == ("all KBs", "ok")
    assert row["detail"]["deleted"] == {"kb1": 1}
