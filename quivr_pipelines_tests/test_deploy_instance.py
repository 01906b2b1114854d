"""deploy/dagster.yaml: Dagster's own storage on a real PostgreSQL through dagster-postgres."""

import shutil
import uuid
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


@pytest.fixture
def dagster_database(postgres_dsn):
    params = conninfo_to_dict(postgres_dsn)
    if not params.get("host", "").startswith("127.") and params.get("host") != "localhost":
        pytest.skip("needs PostgreSQL over TCP")
    name = f"dagster_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield {**params, "dbname": name}
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_production_instance_stores_runs_and_partitions_in_postgres(dagster_database, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_PG_HOST", dagster_database["host"])
    monkeypatch.setenv("DAGSTER_PG_PORT", str(dagster_database.get("port", 5432)))
    monkeypatch.setenv("DAGSTER_PG_DB", dagster_database["dbname"])
    monkeypatch.setenv("DAGSTER_PG_USER", dagster_database.get("user", "postgres"))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", dagster_database.get("password", ""))
    shutil.copyfile(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")

    @dg.asset
    def probe():
        return 1

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        result = dg.materialize([probe], instance=instance)
        assert result.success
        instance.add_dynamic_partitions("knowledge_bases", ["kb1"])
    with dg.DagsterInstance.from_config(str(tmp_path)) as reopened:
        assert reopened.get_run_by_id(result.run_id).is_success
        assert reopened.get_dynamic_partitions("knowledge_bases") == ["kb1"]
    with psycopg.connect(**dagster_database) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 1


def test_the_default_instance_keeps_everything_under_the_data_dir(settings_env, tmp_path):
    """Runs from the project folder (./dagster.yaml, as `dagster dev` reads it) write their
    runs, artifacts and step logs under .quivr, nothing in the working directory itself."""
    from quivr_pipelines.runner import dagster_instance
    from quivr_pipelines_tests.helpers import ingest

    shutil.copy(Path(__file__).resolve().parents[1] / "dagster.yaml", tmp_path / "dagster.yaml")
    (settings_env.inbox_dir / "kb1").mkdir(parents=True)
    (settings_env.inbox_dir / "kb1" / "a.txt").write_text("A short document about logs.\n")
    summary, _ = ingest(instance=dagster_instance(settings_env))
    assert summary["runs"] == 1 and summary["runs_failed"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".quivr", "dagster.yaml", "data"]
    assert (tmp_path / ".quivr" / "dagster" / "history" / "runs.db").exists()
