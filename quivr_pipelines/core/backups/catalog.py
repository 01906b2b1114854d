"""Catalog backups: `pg_dump -Fc` of the catalog schema, a manifest, a verified restore.

Consistency: one REPEATABLE READ transaction exports its snapshot (`pg_export_snapshot()`), counts
every table's rows and stays open while `pg_dump --snapshot=...` reads the same snapshot, so the
manifest's row counts are exactly the rows in the dump, whatever commits meanwhile.

Restore never writes into the live schema: pg_restore cannot rename a schema, so the dump is
restored into a scratch database, the schema renamed there, dumped again and restored into the
target database, then the scratch database is dropped (needs CREATEDB). The live schema is not
locked at any point. An in-place restore restores beside it under a staging name, checks the row
counts, then drops the old schema and renames the staging one in one short transaction.
ALTER SCHEMA RENAME follows references by OID (defaults, sequences, foreign keys, indexes); text
that names the schema (function bodies) would not follow, and the catalog has none.

Passwords: pg_dump/pg_restore get the password through PGPASSWORD and a conninfo without it on
their command line; error text is redacted again before it is raised.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from quivr_pipelines.core.catalog.database import SCHEMA_PATTERN

FORMAT = "pg_dump-custom"
CHUNK = 1024 * 1024
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")


class BackupError(RuntimeError):
    """A backup or restore refused or failed; the message is safe to log (no password)."""


@dataclass(frozen=True)
class CatalogManifest:
    id: str
    created_at: datetime
    component: str  # "catalog" (one schema) or "database" (a whole database)
    schema: str | None
    server_version: str
    pg_dump_version: str
    size: int
    sha256: str
    tables: dict[str, int]  # table -> rows in the dump ("schema.table" for a whole database)
    format: str = FORMAT
    include: tuple[str, ...] = ()  # the tables backed up when not the whole schema

    def to_dict(self) -> dict:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["include"] = list(self.include)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> CatalogManifest:
        data = dict(data)
        data["created_at"] = datetime.fromisoformat(data["created_at"])
        data["tables"] = {str(k): int(v) for k, v in data["tables"].items()}
        data["include"] = tuple(data.get("include", ()))
        return cls(**data)


@dataclass(frozen=True)
class RestoreReport:
    schema: str
    tables: dict[str, tuple[int | None, int | None]]  # table -> (expected, found)
    ok: bool
    seconds: float
    replaced: bool = False  # an in-place restore replaced the schema


# -- tools ------------------------------------------------------------------------------------

def _tool_candidates(name: str) -> list[Path]:
    found: list[Path] = []
    spec = importlib.util.find_spec("pgserver")
    if spec and spec.origin:
        found.append(Path(spec.origin).parent / "pginstall" / "bin" / name)
    found.extend(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True))
    on_path = shutil.which(name)
    if on_path:
        found.append(Path(on_path))
    unique, seen = [], set()
    for path in found:
        if path.is_file() and path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append(path)
    return unique


def _tool_version(path: Path) -> str | None:
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    match = re.search(r"\)\s+(\d+(?:\.\d+)?)", out.stdout)
    return match.group(1) if out.returncode == 0 and match else None


def find_pg_tool(name: str, server_major: int) -> Path:
    """The `name` (pg_dump, pg_restore) of the server's major version: an older pg_dump refuses a
    newer server, and a newer pg_dump writes archives an older pg_restore cannot read."""
    seen = []
    for path in _tool_candidates(name):
        version = _tool_version(path)
        seen.append(f"{path} ({version or 'unusable'})")
        if version and int(version.split(".")[0]) == server_major:
            return path
    raise BackupError(
        f"no {name} for PostgreSQL {server_major}: found {', '.join(seen) or 'none'}; install "
        f"PostgreSQL {server_major}'s client tools (Debian: postgresql-client-{server_major})"
        " or, for the embedded server (16), the pgserver package"
    )


# -- connections ------------------------------------------------------------------------------

def _libpq(dsn: str) -> tuple[str, dict[str, str], str | None]:
    """A conninfo without the password, the environment carrying it, and the password."""
    params = conninfo_to_dict(dsn)
    password = params.pop("password", None) or None
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = password
    return make_conninfo(**params), env, password


def _redact(text: str, password: str | None) -> str:
    if password:
        text = text.replace(password, "***")
    text = re.sub(r"(password\s*=\s*)\S+", r"\1***", text, flags=re.I)
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)


@contextmanager
def _connect(dsn: str, *, autocommit: bool = False, dbname: str | None = None):
    conninfo, _, password = _libpq(dsn)
    try:
        kwargs = {"dbname": dbname} if dbname else {}
        conn = psycopg.connect(make_conninfo(dsn, **kwargs), autocommit=autocommit, connect_timeout=10)
    except psycopg.Error as exc:
        raise BackupError(f"cannot connect to {conninfo}: {_redact(str(exc).strip(), password)}") from None
    with conn:
        yield conn


def _server(conn: psycopg.Connection) -> tuple[int, str]:
    num, version = conn.execute(
        "SELECT current_setting('server_version_num')::int, current_setting('server_version')"
    ).fetchone()
    return num // 10000, version


def _tables(conn: psycopg.Connection, schema: str | None) -> list[tuple[str, str]]:
    query = (
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND "
    )
    if schema is not None:
        rows = conn.execute(query + "n.nspname = %s ORDER BY 1, 2", (schema,))
    else:
        rows = conn.execute(
            query + "n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg\\_%%' ORDER BY 1, 2",
            (list(_SYSTEM_SCHEMAS),),
        )
    return [(s, t) for s, t in rows]


def _count(conn: psycopg.Connection, schema: str, table: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    return conn.execute(query).fetchone()[0]


def _check_schema(schema: str) -> None:
    if not SCHEMA_PATTERN.match(schema):
        raise BackupError(f"invalid schema name {schema!r}")


# -- subprocesses -----------------------------------------------------------------------------

def _fail(what: str, rc: int, err: BinaryIO, password: str | None) -> BackupError:
    err.seek(0)
    lines = [line for line in err.read().decode(errors="replace").splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "no error output"
    return BackupError(f"{what} failed (exit {rc}): {_redact(last, password)}")


def _run(cmd: list[str], env: dict[str, str], password: str | None) -> None:
    with tempfile.TemporaryFile() as err:
        rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env).returncode
        if rc:
            raise _fail(Path(cmd[0]).name, rc, err, password)


def _stream_to(cmd: list[str], env: dict[str, str], password: str | None, sink: BinaryIO) -> tuple[int, str]:
    """Run `cmd`, copying its stdout to `sink` chunk by chunk; (bytes, sha256 hex)."""
    digest, size = hashlib.sha256(), 0
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env)
        try:
            while chunk := proc.stdout.read(CHUNK):
                sink.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.stdout.close()
            rc = proc.wait()
        if rc:
            raise _fail(Path(cmd[0]).name, rc, err, password)
    return size, digest.hexdigest()


@contextmanager
def _sink(out: BinaryIO | Path):
    """A Path is written beside itself and renamed when complete: never a half file under its name."""
    if not isinstance(out, (str, Path)):
        yield out
        return
    path = Path(out)
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("wb") as handle:
            yield handle
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


# -- backup -----------------------------------------------------------------------------------

def backup_catalog(dsn: str, schema: str, out: BinaryIO | Path, *, include: tuple[str, ...] = (),
                   backup_id: str | None = None, on_snapshot: Callable[[], None] | None = None) -> CatalogManifest:
    """Dump `schema` (or only its tables named in `include`) to `out`; the manifest's row counts
    are those of the dump's snapshot. `on_snapshot` is called once the snapshot is fixed and
    counted, before pg_dump runs (a backup set releases its write locks there)."""
    _check_schema(schema)
    return _backup(dsn, out, schema=schema, include=tuple(include), backup_id=backup_id, on_snapshot=on_snapshot)


def backup_database(dsn: str, out: BinaryIO | Path, *, backup_id: str | None = None) -> CatalogManifest:
    """Dump a whole database (the Dagster storage database): every schema, row counts per
    "schema.table" taken in the dump's snapshot as for the catalog. Restore it with pg_restore
    into an empty database."""
    return _backup(dsn, out, schema=None, include=(), backup_id=backup_id)


def _backup(dsn: str, out: BinaryIO | Path, *, schema: str | None, include: tuple[str, ...],
            backup_id: str | None, on_snapshot: Callable[[], None] | None = None) -> CatalogManifest:
    conninfo, env, password = _libpq(dsn)
    created_at = datetime.now(UTC)
    with _connect(dsn) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        major, server_version = _server(conn)  # the first query: it fixes the snapshot
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        tables = _tables(conn, schema)
        if include:
            missing = sorted(set(include) - {t for _, t in tables})
            if missing:
                raise BackupError(f"no table {', '.join(missing)} in schema {schema}")
            tables = [(s, t) for s, t in tables if t in include]
        counts = {(t if schema else f"{s}.{t}"): _count(conn, s, t) for s, t in tables}
        if on_snapshot is not None:
            on_snapshot()
        pg_dump = find_pg_tool("pg_dump", major)
        cmd = [str(pg_dump), "-Fc", "--no-owner", "--no-privileges", f"--snapshot={snapshot}",
               f"--dbname={conninfo}"]
        if include:
            cmd += [f'--table="{schema}"."{t}"' for t in include]
        elif schema:
            cmd.append(f'--schema="{schema}"')
        with _sink(out) as sink:
            size, sha256 = _stream_to(cmd, env, password, sink)
        conn.rollback()
    return CatalogManifest(
        id=backup_id or uuid.uuid4().hex, created_at=created_at,
        component="catalog" if schema else "database", schema=schema,
        server_version=server_version, pg_dump_version=_tool_version(pg_dump) or "unknown",
        size=size, sha256=sha256, tables=counts, include=include,
    )


# -- verify and restore -----------------------------------------------------------------------

def verify_file(path: Path, manifest: CatalogManifest) -> None:
    """Size and sha256 of `path` against the manifest, before anything is restored."""
    path = Path(path)
    size = path.stat().st_size if path.exists() else None
    if size != manifest.size:
        raise BackupError(
            f"size mismatch: expected {manifest.size} bytes, got "
            f"{'no file' if size is None else size} ({path.name}); nothing was restored"
        )
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != manifest.sha256:
        raise BackupError(
            f"checksum mismatch: expected {manifest.sha256}, got {digest.hexdigest()}"
            f" ({path.name}); nothing was restored"
        )


def _schema_objects(conn: psycopg.Connection, schema: str) -> int | None:
    """None when the schema does not exist, else how many objects it holds."""
    row = conn.execute(
        "SELECT n.oid, (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid)"
        " + (SELECT count(*) FROM pg_proc p WHERE p.pronamespace = n.oid)"
        " + (SELECT count(*) FROM pg_type t WHERE t.typnamespace = n.oid AND t.typrelid = 0"
        " AND t.typcategory <> 'A')"
        " FROM pg_namespace n WHERE n.nspname = %s", (schema,),
    ).fetchone()
    return None if row is None else row[1]


def restore_catalog(dsn: str, dump: Path, manifest: CatalogManifest, *, target_schema: str,
                    in_place: bool = False, fresh_backup_id: str | None = None) -> RestoreReport:
    """Restore the catalog backup `dump` as `target_schema` of the database of `dsn`, then check
    every table's row count against the manifest.

    A new (or empty) schema unless `in_place`: that replaces `target_schema` (normally the live
    one) and needs the id of a backup taken just before (`fresh_backup_id`), the way back.
    """
    started = time.monotonic()
    _check_schema(target_schema)
    if manifest.component != "catalog" or manifest.format != FORMAT or not manifest.schema:
        raise BackupError(f"not a catalog backup ({manifest.component}, {manifest.format})")
    if in_place and not fresh_backup_id:
        raise BackupError(
            f"an in-place restore replaces schema {target_schema}: take a fresh backup first and "
            "pass its id as fresh_backup_id; nothing was restored"
        )
    if target_schema == manifest.schema and not in_place:
        raise BackupError(
            f"target schema {target_schema} is the backed-up schema: restore into a new schema, or"
            " pass in_place=True with fresh_backup_id; nothing was restored"
        )
    verify_file(dump, manifest)
    conninfo, env, password = _libpq(dsn)
    with _connect(dsn, autocommit=True) as conn:
        major, _ = _server(conn)
        objects = _schema_objects(conn, target_schema)
        if objects and not in_place:
            raise BackupError(
                f"target schema {target_schema} exists and holds {objects} objects; nothing was restored"
            )
        dbname = conn.info.dbname
    pg_restore, pg_dump = find_pg_tool("pg_restore", major), find_pg_tool("pg_dump", major)
    staging = f"{target_schema[:40]}_restore_{uuid.uuid4().hex[:8]}" if in_place else target_schema

    scratch = f"quivr_restore_{uuid.uuid4().hex[:12]}"
    restore = [str(pg_restore), "--no-owner", "--no-privileges", "--exit-on-error"]
    with _connect(dsn, autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(scratch)))
        except psycopg.Error as exc:
            raise BackupError(
                f"cannot create the scratch database a restore needs ({_redact(str(exc).strip(), password)});"
                " the role needs CREATEDB; nothing was restored"
            ) from None
    try:
        scratch_conninfo = make_conninfo(conninfo, dbname=scratch)
        with _connect(dsn, autocommit=True, dbname=scratch) as conn:
            if manifest.include:  # a dump of some tables has no CREATE SCHEMA
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(manifest.schema)))
        _run(restore + [f"--dbname={scratch_conninfo}", str(dump)], env, password)
        with _connect(dsn, autocommit=True, dbname=scratch) as conn:
            conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                sql.Identifier(manifest.schema), sql.Identifier(staging)))
        with tempfile.TemporaryDirectory(prefix="quivr-restore-") as tmp:
            renamed = Path(tmp) / "renamed.dump"
            with renamed.open("wb") as handle:
                _stream_to([str(pg_dump), "-Fc", "--no-owner", "--no-privileges",
                            f'--schema="{staging}"', f"--dbname={scratch_conninfo}"], env, password, handle)
            with _connect(dsn, autocommit=True) as conn:
                if _schema_objects(conn, staging) == 0:  # an empty target: the dump creates it
                    conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(staging)))
            _run(restore + ["--single-transaction", f"--dbname={conninfo}", str(renamed)], env, password)
    finally:
        with _connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))

    with _connect(dsn) as conn:
        present = {t for _, t in _tables(conn, staging)}
        found = {t: _count(conn, staging, t) for t in sorted(present)}
        conn.rollback()
    tables = {t: (manifest.tables.get(t), found.get(t)) for t in sorted(set(manifest.tables) | set(found))}
    wrong = {t: pair for t, pair in tables.items() if pair[0] != pair[1]}
    if wrong:
        details = ", ".join(f"{t}: expected {e}, found {f}" for t, (e, f) in wrong.items())
        raise BackupError(
            f"row counts differ after restore ({details}); the restored schema {staging} is left in"
            f" database {dbname} for inspection" + ("; the live schema was not touched" if in_place else "")
        )
    if in_place:
        with _connect(dsn) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target_schema)))
            conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                sql.Identifier(staging), sql.Identifier(target_schema)))
            conn.commit()
    return RestoreReport(schema=target_schema, tables=tables, ok=True,
                         seconds=round(time.monotonic() - started, 3), replaced=in_place)
