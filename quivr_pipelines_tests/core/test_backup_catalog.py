"""Catalog backup and restore against the real PostgreSQL 15 and the embedded pgserver (16):
a restored schema equals the backed-up one row for row, damaged files are refused before anything
is written, no password leaks, and a backup taken under concurrent writes is one snapshot."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from quivr_pipelines.core.backups import catalog as backups
from quivr_pipelines.core.backups.catalog import (
    BackupError,
    CatalogManifest,
    backup_catalog,
    backup_database,
    find_pg_tool,
    restore_catalog,
    verify_file,
)
from quivr_pipelines.core.catalog.database import apply_migrations


@pytest.fixture(scope="module")
def embedded_dsn():
    """An embedded PostgreSQL 16 of its own, outside pytest's temporary root: as root, pgserver
    runs the server as the `pgserver` user and opens the path to it, and every pytest process
    that starts (a parallel suite) closes /tmp/pytest-of-root to its owner again; the server
    then PANICs on pg_control ("Permission denied")."""
    import pgserver

    from quivr_pipelines.core.catalog.database import embedded_postgres_dsn

    pgdata = Path(tempfile.mkdtemp(prefix="quivr-test-pgbackup-")) / "pgdata"
    yield embedded_postgres_dsn(pgdata)
    pgserver.get_server(pgdata).cleanup()  # this process's handle is the only one: it stops
    shutil.rmtree(pgdata.parent, ignore_errors=True)


@pytest.fixture(params=["postgres15", "embedded16"])
def server_dsn(request, postgres_dsn) -> str:
    return postgres_dsn if request.param == "postgres15" else request.getfixturevalue("embedded_dsn")


@pytest.fixture
def catalog(server_dsn):
    """(dsn, schema, drop): a migrated catalog schema with rows in every table; `drop(name)`
    registers another schema to drop afterwards."""
    schema = f"bk_{uuid.uuid4().hex[:10]}"
    created = [schema]
    apply_migrations(server_dsn, schema)
    _fill(server_dsn, schema)
    yield server_dsn, schema, created.append
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        for name in created:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def _fill(dsn: str, schema: str, embeddings: int = 200) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        for kb in ("manuals", "faq"):
            conn.execute(
                "INSERT INTO knowledge_bases (name, chunk_max_characters, chunk_new_after_characters,"
                " chunk_combine_under_characters, collection, embedding_model, pii)"
                " VALUES (%s, 1500, 1200, 300, %s, 'local:minilm:384', 'detect')", (kb, f"{kb}_g0"))
            conn.execute(
                "INSERT INTO collection_generations (kb, generation, collection, embedding_model,"
                " dimensions, state, chunking, gates) VALUES (%s, 0, %s, 'local:minilm:384', 384,"
                " 'serving', '{\"max\": 1500}', '{\"check_recall\": true}')", (kb, f"{kb}_g0"))
            for i in range(40):
                status = "failed" if i % 9 == 0 else "ingested"
                conn.execute(
                    "INSERT INTO documents (kb, object_key, etag, sha256, size_bytes, status,"
                    " failure_reason, chunk_count, pii_entities, parse_seconds, ingested_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now() - %s * interval '1 min')",
                    (kb, f"docs/é {i:03d}.pdf", f'"{i}"', f"{i:064x}", 1000 + i, status,
                     "parse error: 'quoted'\nnewline" if status == "failed" else None, i,
                     json.dumps({"EMAIL": i % 3}), i / 7, i))
                conn.execute(
                    "INSERT INTO generation_documents (kb, generation, object_key, status, chunk_count)"
                    " VALUES (%s, 0, %s, %s, %s)", (kb, f"docs/é {i:03d}.pdf", status, i))
        conn.execute("INSERT INTO api_keys (id, key_hash, name, role, kbs) VALUES"
                     " ('key_a', '\\x01ff', 'a', 'viewer', '{manuals}'), ('key_b', '\\x02', 'b', 'admin', NULL)")
        conn.execute("INSERT INTO rate_limit_buckets VALUES ('key_a', 4.5, now(), true)")
        conn.execute(
            "INSERT INTO audit_log (at, request_id, api_key_id, kb, action, method, path, status,"
            " latency_ms) SELECT now(), 'r' || g, 'key_a', 'manuals', 'search', 'POST', '/search',"
            " 200, g / 3.0 FROM generate_series(1, 300) g")
        conn.execute(
            "INSERT INTO usage_ledger (kind, provider, model, kb, inputs) SELECT 'embed', 'local',"
            " 'minilm', 'faq', g FROM generate_series(1, 100) g")
        conn.execute(
            "INSERT INTO embedding_cache (model, text_sha256, vector) SELECT 'minilm',"
            " sha256(g::text::bytea), decode(repeat(md5(g::text), 48), 'hex')"
            " FROM generate_series(1, %s) g", (embeddings,))
        conn.execute("INSERT INTO admin_audit (actor, action, target, outcome, detail) VALUES"
                     " ('cli:root', 'keys.create', 'key_a', 'ok', '{\"role\": \"viewer\"}')")
        conn.execute("INSERT INTO audit_poison (table_name, error, row_data) VALUES"
                     " ('audit_log', '22021', '{\"path\": \"\\\\u0000\"}')")


def _rows(dsn: str, schema: str) -> dict[str, list[str]]:
    """Every row of every table of `schema` as text, sorted: an exact content comparison."""
    with psycopg.connect(dsn) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,))]
        return {t: sorted(r for (r,) in conn.execute(sql.SQL("SELECT x::text FROM {}.{} x").format(
            sql.Identifier(schema), sql.Identifier(t)))) for t in tables}


def _schema_exists(dsn: str, schema: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is not None


def _damage(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("DELETE FROM {}.documents WHERE kb = 'faq'").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("UPDATE {}.knowledge_bases SET collection = 'wrong'").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("DELETE FROM {}.audit_log").format(sql.Identifier(schema)))


def test_restore_into_a_new_schema_equals_the_backup_row_for_row(catalog, tmp_path):
    dsn, schema, drop = catalog
    original = _rows(dsn, schema)
    dump = tmp_path / "catalog.dump"
    started = time.monotonic()
    manifest = backup_catalog(dsn, schema, dump, backup_id="b1")
    dump_seconds = time.monotonic() - started
    assert manifest.id == "b1" and manifest.component == "catalog" and manifest.schema == schema
    assert manifest.size == dump.stat().st_size and manifest.format == "pg_dump-custom"
    assert manifest.tables == {t: len(rows) for t, rows in original.items()}
    assert manifest.created_at.utcoffset().total_seconds() == 0
    assert CatalogManifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest
    assert not list(tmp_path.glob("*.partial"))

    _damage(dsn, schema)
    target = f"{schema}_r"
    drop(target)
    report = restore_catalog(dsn, dump, manifest, target_schema=target)
    assert report.ok and report.schema == target and not report.replaced
    assert report.tables == {t: (len(rows), len(rows)) for t, rows in original.items()}
    assert _rows(dsn, target) == original
    print(f"\n{manifest.server_version}: dump {manifest.size} bytes in {dump_seconds:.2f} s,"
          f" {sum(manifest.tables.values())} rows; restore {report.seconds:.2f} s")


def test_in_place_restore_needs_a_fresh_backup_and_replaces_the_schema(catalog, tmp_path):
    dsn, schema, _ = catalog
    original = _rows(dsn, schema)
    manifest = backup_catalog(dsn, schema, tmp_path / "a.dump")
    _damage(dsn, schema)
    damaged = _rows(dsn, schema)
    with pytest.raises(BackupError, match="restore into a new schema"):
        restore_catalog(dsn, tmp_path / "a.dump", manifest, target_schema=schema)
    with pytest.raises(BackupError, match="fresh_backup_id"):
        restore_catalog(dsn, tmp_path / "a.dump", manifest, target_schema=schema, in_place=True)
    assert _rows(dsn, schema) == damaged

    fresh = backup_catalog(dsn, schema, tmp_path / "fresh.dump")
    report = restore_catalog(dsn, tmp_path / "a.dump", manifest, target_schema=schema,
                             in_place=True, fresh_backup_id=fresh.id)
    assert report.ok and report.replaced
    assert _rows(dsn, schema) == original
    with psycopg.connect(dsn) as conn:
        assert not conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                                (f"{schema}_restore_%",)).fetchall()
        # the restored sequences continue after the restored rows
        conn.execute(sql.SQL("INSERT INTO {}.admin_audit (actor, action, outcome) VALUES ('t', 't', 'ok')")
                     .format(sql.Identifier(schema)))


@pytest.mark.parametrize("damage", ["truncated", "flipped byte"])
def test_a_damaged_file_is_refused_before_anything_is_written(catalog, tmp_path, damage):
    dsn, schema, drop = catalog
    dump = tmp_path / "c.dump"
    manifest = backup_catalog(dsn, schema, dump)
    data = bytearray(dump.read_bytes())
    if damage == "truncated":
        dump.write_bytes(data[: len(data) // 2])
    else:
        data[len(data) // 2] ^= 0x01
        dump.write_bytes(bytes(data))
    target = f"{schema}_x"
    drop(target)
    expected = "size mismatch" if damage == "truncated" else "checksum mismatch: expected"
    with pytest.raises(BackupError, match=expected) as info:
        restore_catalog(dsn, dump, manifest, target_schema=target)
    assert "nothing was restored" in str(info.value)
    assert not _schema_exists(dsn, target)
    with pytest.raises(BackupError):
        verify_file(dump, manifest)


def test_refuses_a_non_empty_target_and_reports_count_mismatches(catalog, tmp_path):
    dsn, schema, drop = catalog
    dump = tmp_path / "d.dump"
    manifest = backup_catalog(dsn, schema, dump)
    other = f"{schema}_o"
    drop(other)
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(other)))
        conn.execute(sql.SQL("CREATE TABLE {}.keep (x int)").format(sql.Identifier(other)))
    with pytest.raises(BackupError, match="exists and holds 1 objects; nothing was restored"):
        restore_catalog(dsn, dump, manifest, target_schema=other)

    lying = dataclasses.replace(manifest, tables={**manifest.tables, "documents": 1})
    target = f"{schema}_m"
    drop(target)
    with pytest.raises(BackupError, match=rf"documents: expected 1, found 80.*{target} is left"):
        restore_catalog(dsn, dump, lying, target_schema=target)
    assert _rows(dsn, target)["documents"]  # left for inspection


def test_include_backs_up_only_the_named_tables(catalog, tmp_path):
    dsn, schema, drop = catalog
    dump = tmp_path / "e.dump"
    manifest = backup_catalog(dsn, schema, dump, include=("knowledge_bases", "documents"))
    assert manifest.tables == {"documents": 80, "knowledge_bases": 2}
    target = f"{schema}_i"
    drop(target)
    restore_catalog(dsn, dump, CatalogManifest.from_dict(manifest.to_dict()), target_schema=target)
    restored = _rows(dsn, target)
    assert set(restored) == {"documents", "knowledge_bases"}
    assert restored["documents"] == _rows(dsn, schema)["documents"]
    with pytest.raises(BackupError, match="no table nope in schema"):
        backup_catalog(dsn, schema, tmp_path / "f.dump", include=("nope",))


def test_a_backup_under_concurrent_inserts_is_one_snapshot(catalog, tmp_path):
    dsn, schema, drop = catalog
    _fill_more = f"INSERT INTO {schema}.embedding_cache (model, text_sha256, vector) SELECT 'big'," \
                 " sha256(g::text::bytea), decode(repeat(md5(g::text), 256), 'hex')" \
                 " FROM generate_series(1, 5000) g"
    with psycopg.connect(dsn) as conn:
        conn.execute(_fill_more)  # ~20 MB of table data: the dump takes a while
    stop, inserted = threading.Event(), []

    def writer():
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute(sql.SQL("INSERT INTO {}.admin_audit (actor, action, outcome) VALUES"
                                     " ('writer', 'loop', 'ok')").format(sql.Identifier(schema)))
                inserted.append(1)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(inserted) < 20:
            time.sleep(0.01)
        manifest = backup_catalog(dsn, schema, tmp_path / "busy.dump")
        during = len(inserted)
        time.sleep(0.1)
    finally:
        stop.set()
        thread.join()
    with psycopg.connect(dsn) as conn:
        after = conn.execute(sql.SQL("SELECT count(*) FROM {}.admin_audit").format(
            sql.Identifier(schema))).fetchone()[0]
    assert after > manifest.tables["admin_audit"] > 1, "the writer ran before and after the snapshot"
    target = f"{schema}_s"
    drop(target)
    report = restore_catalog(dsn, tmp_path / "busy.dump", manifest, target_schema=target)
    assert report.tables["admin_audit"] == (manifest.tables["admin_audit"],) * 2
    with psycopg.connect(dsn) as conn:
        ids = [i for (i,) in conn.execute(sql.SQL("SELECT id FROM {}.admin_audit ORDER BY id").format(
            sql.Identifier(target)))]
        original = [i for (i,) in conn.execute(sql.SQL("SELECT id FROM {}.admin_audit WHERE id <= %s"
                                                       " ORDER BY id").format(sql.Identifier(schema)),
                                               (ids[-1],))]
    assert ids == original, "the dump holds exactly the rows committed before its snapshot"
    print(f"\nbusy dump: {manifest.size} bytes, {during} writer inserts by its end")


def test_no_password_in_errors_command_lines_or_manifest(postgres_dsn, db_schema, tmp_path, monkeypatch):
    secret = "s3cr3t-pw-7731"
    refused = f"postgresql://postgres:{secret}@127.0.0.1:1/test"
    with pytest.raises(BackupError) as info:
        backup_catalog(refused, "quivr", tmp_path / "x.dump")
    assert secret not in str(info.value) and "cannot connect" in str(info.value)

    apply_migrations(postgres_dsn, db_schema)
    with_password = psycopg.conninfo.make_conninfo(postgres_dsn, password=secret)  # trust auth ignores it
    launched = []
    real_popen = subprocess.Popen

    def spy(cmd, *args, **kwargs):
        launched.append((cmd, kwargs.get("env") or {}))
        return real_popen(cmd, *args, **kwargs)

    monkeypatch.setattr(backups.subprocess, "Popen", spy)
    manifest = backup_catalog(with_password, db_schema, tmp_path / "p.dump")
    dumps = [(cmd, env) for cmd, env in launched if "-Fc" in cmd]
    assert dumps and all(secret not in " ".join(cmd) for cmd, _ in launched)
    assert all(env.get("PGPASSWORD") == secret for _, env in dumps)
    assert secret not in json.dumps(manifest.to_dict())

    with pytest.raises(BackupError, match="pg_dump failed .*no matching schemas") as info:
        backup_catalog(with_password, "no_such_schema", tmp_path / "n.dump")
    assert secret not in str(info.value)
    assert not (tmp_path / "n.dump").exists() and not (tmp_path / "n.dump.partial").exists()
    assert backups._redact(f"x password={secret} postgresql://u:{secret}@h/d", None).count(secret) == 0


def test_find_pg_tool_matches_the_server_major_or_says_what_to_install():
    assert "pgserver" in str(find_pg_tool("pg_dump", 16))
    assert backups._tool_version(find_pg_tool("pg_restore", 15)).startswith("15.")
    with pytest.raises(BackupError) as info:
        find_pg_tool("pg_dump", 99)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("no pg_dump for PostgreSQL 99: found ")
    assert "(16.2)" in message and "(15." in message and "postgresql-client-99" in message


def test_backup_database_dumps_every_schema_with_counts(embedded_dsn, tmp_path):
    name, copy = f"bkdb_{uuid.uuid4().hex[:8]}", f"bkdb_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(embedded_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(copy)))
    try:
        dsn = psycopg.conninfo.make_conninfo(embedded_dsn, dbname=name)
        with psycopg.connect(dsn) as conn:
            conn.execute("CREATE TABLE runs (id int)")
            conn.execute("INSERT INTO runs SELECT generate_series(1, 7)")
            conn.execute("CREATE SCHEMA other")
            conn.execute("CREATE TABLE other.events (id int)")
        manifest = backup_database(dsn, tmp_path / "db.dump")
        assert manifest.component == "database" and manifest.schema is None
        assert manifest.tables == {"other.events": 0, "public.runs": 7}
        verify_file(tmp_path / "db.dump", manifest)
        pg_restore = find_pg_tool("pg_restore", 16)
        target = psycopg.conninfo.make_conninfo(embedded_dsn, dbname=copy)
        subprocess.run([str(pg_restore), "--no-owner", "--exit-on-error", f"--dbname={target}",
                        str(tmp_path / "db.dump")], check=True, env=dict(os.environ))
        with psycopg.connect(target) as conn:
            assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 7
        with pytest.raises(BackupError, match="not a catalog backup"):
            restore_catalog(embedded_dsn, tmp_path / "db.dump", manifest, target_schema="x_db")
    finally:
        with psycopg.connect(embedded_dsn, autocommit=True) as conn:
            for db in (name, copy):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


def test_a_role_without_createdb_is_told_before_anything_is_restored(embedded_dsn, tmp_path):
    schema, role = f"bk_{uuid.uuid4().hex[:10]}", f"bk_role_{uuid.uuid4().hex[:8]}"
    apply_migrations(embedded_dsn, schema)
    manifest = backup_catalog(embedded_dsn, schema, tmp_path / "r.dump")
    with psycopg.connect(embedded_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOCREATEDB").format(sql.Identifier(role)))
    try:
        limited = psycopg.conninfo.make_conninfo(embedded_dsn, user=role)
        with pytest.raises(BackupError, match="needs CREATEDB; nothing was restored"):
            restore_catalog(limited, tmp_path / "r.dump", manifest, target_schema=f"{schema}_r")
        assert not _schema_exists(embedded_dsn, f"{schema}_r")
    finally:
        with psycopg.connect(embedded_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_backup_streams_into_any_binary_file_object(postgres_dsn, db_schema, tmp_path):
    """What an artifact store's open_write hands over: written in chunks, never a path."""
    apply_migrations(postgres_dsn, db_schema)
    with (tmp_path / "stream.dump").open("wb") as handle:
        manifest = backup_catalog(postgres_dsn, db_schema, handle)
    verify_file(tmp_path / "stream.dump", manifest)
    assert manifest.tables["schema_migrations"] > 0
