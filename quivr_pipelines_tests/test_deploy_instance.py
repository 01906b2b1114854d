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
        instance.add_dynamic_partitions("documents", ["kb/a.txt"])
    with dg.DagsterInstance.from_config(str(tmp_path)) as reopened:
        assert reopened.get_run_by_id(result.run_id).is_success
        assert reopened.get_dynamic_partitions("documents") == ["kb/a.txt"]
    with psycopg.connect(**dagster_database) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
