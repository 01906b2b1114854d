"""A whole backup set for real: two KBs ingested through Dagster into the embedded engine and the
test PostgreSQL, backed up to the artifact store (plain and age-encrypted), the live data damaged,
and the set restored into a new schema and new collections, compared row for row and point for
point with what was live at the backup."""

from __future__ import annotations

import psycopg
import pytest
from pyrage import x25519

from quivr_pipelines.core.artifacts import build_artifact_store
from quivr_pipelines.core.backups.backup_set import BackupContext, BackupSetError, restore_set, take_backup_set
from quivr_pipelines.core.backups.crypto import BackupKeyError
from quivr_pipelines.core.backups.sets import list_sets
from quivr_pipelines.core.factory import build_vector_store, open_database
from quivr_pipelines_tests.conftest import DOCS
from quivr_pipelines_tests.helpers import ingest

TABLES = ("documents", "knowledge_bases", "collection_generations")


def rows(conn, schema: str, table: str) -> list[tuple]:
    return conn.execute(f'SELECT * FROM "{schema}"."{table}" ORDER BY 1, 2').fetchall()


def points(store, collection: str, kb: str) -> dict[str, dict]:
    found, offset = {}, None
    while True:
        page, offset = store.scroll_points(collection, kb, offset, 256)
        found.update({hit.id: hit.payload for hit in page})
        if offset is None:
            return found


@pytest.fixture
def live(settings_env):
    base = (DOCS / "norwich-city.txt").read_text()
    for kb, count in (("alpha", 3), ("beta", 2)):
        folder = settings_env.inbox_dir / kb
        folder.mkdir(parents=True)
        for i in range(count):
            (folder / f"doc-{i}.txt").write_text(f"{kb} document {i}.\n\n" + base[i * 700:(i * 700) + 2500])
    ingest()
    db, store = open_database(settings_env), build_vector_store(settings_env)
    schemas = []
    yield {"settings": settings_env, "db": db, "store": store, "artifacts": build_artifact_store(settings_env),
           "schemas": schemas}
    store.close()
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    db.close()


def context(live, **kwargs) -> BackupContext:
    return BackupContext(db=live["db"], vectors=live["store"], artifacts=live["artifacts"], **kwargs)


def snapshot(live) -> tuple[dict, dict]:
    db, store = live["db"], live["store"]
    with psycopg.connect(db.dsn) as conn:
        tables = {t: rows(conn, db.schema, t) for t in TABLES}
    vectors = {kb: points(store, store.resolve_alias(kb), kb) for kb in ("alpha", "beta")}
    return tables, vectors


def damage(live) -> None:
    db, store = live["db"], live["store"]
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute(f'DELETE FROM "{db.schema}".documents WHERE kb = %s', ("beta",))
    alpha = store.resolve_alias("alpha")
    store.delete_documents(alpha, "alpha", ["doc-0.txt"])
    store.set_alias("alpha", store.resolve_alias("beta"))


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "age"])
def test_a_set_restores_exactly_what_was_live_into_new_targets(live, encrypted):
    identity = x25519.Identity.generate()
    recipients = [identity.to_public()] if encrypted else []
    tables, vectors = snapshot(live)
    served = {kb: live["store"].resolve_alias(kb) for kb in ("alpha", "beta")}
    manifest = take_backup_set(context(live, recipients=recipients))
    assert manifest.status == "complete" and manifest.encrypted is encrypted
    assert manifest.aliases == served and set(manifest.generations) == {"alpha", "beta"}
    assert manifest.components["vectors"]["writers_held_seconds"] >= 0
    assert [s.id for s in list_sets(live["artifacts"])] == [manifest.id]
    if encrypted:  # nothing of the catalog is readable in the stored file
        key = manifest.components["catalog"]["files"][0]["key"]
        with live["artifacts"].open_read(key) as src:
            assert src.read(21) == b"age-encryption.org/v1"

    damage(live)
    result = restore_set(context(live, identities=[identity]), manifest.id)
    live["schemas"].append(result.schema)
    assert result.schema.startswith(live["db"].schema + "_r")
    assert all(expected == found for expected, found in result.tables.values())
    with psycopg.connect(live["db"].dsn) as conn:
        assert {t: rows(conn, result.schema, t) for t in TABLES} == tables
        assert rows(conn, live["db"].schema, "documents") != tables["documents"]  # live still damaged
    for kb, collection in served.items():
        restored = result.collections[collection]
        assert points(live["store"], restored, kb) == vectors[kb]
        assert result.aliases[kb] == restored
    assert live["store"].resolve_alias("alpha") == served["beta"]  # live aliases untouched


def test_an_encrypted_set_without_the_key_or_with_another_key_restores_nothing(live):
    identity = x25519.Identity.generate()
    manifest = take_backup_set(context(live, recipients=[identity.to_public()]))
    before = set(live["store"].list_collections())
    with pytest.raises(BackupKeyError, match="set QUIVR_BACKUP_AGE_IDENTITY"):
        restore_set(context(live), manifest.id)
    other = x25519.Identity.generate()
    with pytest.raises(BackupKeyError, match="no configured identity matches") as caught:
        restore_set(context(live, identities=[other]), manifest.id)
    assert str(other) not in str(caught.value) and str(identity) not in str(caught.value)
    assert set(live["store"].list_collections()) == before
    with psycopg.connect(live["db"].dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE %s",
                            (live["db"].schema + "_r%",)).fetchone()[0] == 0


@pytest.mark.parametrize("component", ["catalog", "vectors"])
def test_a_damaged_file_is_refused_by_its_checksum_before_anything_is_written(live, component):
    manifest = take_backup_set(context(live))
    key = manifest.components[component]["files"][-1]["key"]
    path = live["settings"].artifacts_dir / key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    before = set(live["store"].list_collections())
    with pytest.raises(BackupSetError, match="fails its checksum.*nothing was restored"):
        restore_set(context(live), manifest.id)
    assert set(live["store"].list_collections()) == before
    with psycopg.connect(live["db"].dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE %s",
                            (live["db"].schema + "_r%",)).fetchone()[0] == 0


def test_unknown_and_clashing_restores_say_why(live):
    with pytest.raises(BackupSetError, match="no backup set 2020"):
        restore_set(context(live), "20200101T000000Z-000000")
    manifest = take_backup_set(context(live))
    first = restore_set(context(live), manifest.id, components=("vectors",))
    assert first.collections and first.schema is None
    with pytest.raises(BackupSetError, match="exist already.*--collection-suffix"):
        restore_set(context(live), manifest.id, components=("vectors",))
    with pytest.raises(BackupSetError, match="invalid collection names"):
        restore_set(context(live), manifest.id, collection_suffix="/../x")
    with psycopg.connect(live["db"].dsn) as conn:  # refused before the catalog was restored
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE %s",
                            (live["db"].schema + "_r%",)).fetchone()[0] == 0


def test_the_configuration_is_in_the_set_with_its_secrets_redacted(live, tmp_path):
    import gzip

    root = tmp_path / "project"
    (root / "deploy").mkdir(parents=True)
    (root / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (root / "deploy" / "values.yaml").write_text("replicas: 2\n")
    secret = "sk-backup-test-0123456789abcdef"
    environ = {"OPENAI_API_KEY": secret, "QUIVR_DATA_DIR": "/srv/quivr"}
    manifest = take_backup_set(context(live, project_root=root, environ=environ))
    part = manifest.components["config"]
    assert {m["path"] for m in part["members"]} >= {"dagster.yaml", "deploy/values.yaml"}
    assert "OPENAI_API_KEY" in part["redacted_names"]
    with live["artifacts"].open_read(part["files"][0]["key"]) as src:
        stored = src.read()
    assert secret.encode() not in stored and secret.encode() not in gzip.decompress(stored)
    assert b"/srv/quivr" in gzip.decompress(stored)
