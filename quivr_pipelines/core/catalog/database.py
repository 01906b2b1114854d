"""PostgreSQL access (psycopg 3) and versioned schema migrations.

One code path for production and the embedded default: without QUIVR_DATABASE_URL an embedded
PostgreSQL (the `pgserver` package, which bundles the server and pg_dump) is started on a Unix
socket under the data directory and shared by every process that uses the same directory.
"""

from __future__ import annotations

import functools
import re
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import psycopg
from psycopg_pool import ConnectionPool

SCHEMA_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def embedded_postgres_dsn(pgdata: Path) -> str:
    """Start the embedded server of `pgdata`, or join the one already running there. pgserver
    stops it from an atexit handler of the last process that joined it, so this process is made
    to run its atexit handlers when it gets SIGTERM too (`exit_cleanly_on_sigterm`)."""
    import pgserver

    pgdata.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    exit_cleanly_on_sigterm()
    return server.get_uri()


def exit_cleanly_on_sigterm() -> None:
    """Make SIGTERM end this process through Python's normal exit (`SystemExit(143)`), running
    atexit handlers: Python's default SIGTERM disposition kills the process without them, which
    left the embedded PostgreSQL running after `kill`, `docker stop` or a supervisor's stop.
    Only the default disposition is replaced, and only from the main thread: a handler installed
    by someone else (Dagster maps SIGTERM to SIGINT, uvicorn handles it while serving) is theirs.
    uvicorn, after its graceful shutdown, restores the handler it found and raises the signal
    again, so a process that serves with uvicorn calls this before uvicorn starts."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def migration_files() -> list[tuple[int, str, str]]:
    folder = resources.files("quivr_pipelines.core.catalog") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = re.match(r"^(\d{4})_(\w+)\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text()))
    return sorted(found)


class Database:
    """A small connection pool with every connection pinned to the catalog schema.

    Waits are bounded so an outage answers fast instead of holding request threads:
    `pool_timeout` is how long a caller waits for a connection (psycopg_pool's default, 30 s,
    made every keyed request hang that long with PostgreSQL down), `connect_timeout` bounds one
    connection attempt (a blackholed host otherwise waits for TCP's SYN retries, ~2 minutes).
    Recovery: the pool's background reconnection backs off exponentially (1, 2, 4, ... s), so
    after a one-minute outage the next attempt could be a minute away; giving up after
    `reconnect_timeout` instead lets the next waiting caller start a fresh attempt at once.
    Every connection is checked when it is handed out (one empty round trip), so connections
    that died with a restarted server are replaced instead of failing a request each.
    """

    def __init__(self, dsn: str, schema: str = "quivr", pool_size: int = 5, migrate: bool = True,
                 pool_timeout: float = 3.0, connect_timeout: float = 5.0):
        if not SCHEMA_PATTERN.match(schema):
            raise ValueError(f"invalid schema name {schema!r}")
        self.schema = schema
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self.pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": False, "connect_timeout": _connect_timeout(connect_timeout)},
            configure=self._configure,
            check=ConnectionPool.check_connection,
            timeout=pool_timeout,
            reconnect_timeout=max(pool_timeout, connect_timeout, 1.0),
            open=True,
            name="quivr-catalog",
        )
        if migrate:
            self.migrate()

    def _configure(self, conn: psycopg.Connection) -> None:
        conn.execute(f'SET search_path TO "{self.schema}", public')
        conn.commit()

    @contextmanager
    def transaction(self):
        """A connection in a transaction: committed on success, rolled back on error."""
        with self.pool.connection() as conn:
            yield conn

    def migrate(self) -> list[int]:
        """Apply pending migrations in order, once, even with several processes starting at once."""
        return apply_migrations(self.dsn, self.schema, self.connect_timeout)

    def schema_version(self) -> int:
        with self.transaction() as conn:
            row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
            return row[0]

    def close(self) -> None:
        self.pool.close()


def _connect_timeout(seconds: float) -> int:
    """libpq takes whole seconds and treats 0 as "wait forever" (and 1 as 2)."""
    return max(2, round(seconds))


def apply_migrations(dsn: str, schema: str, connect_timeout: float = 10.0) -> list[int]:
    """Apply pending migrations in order, once, even with several processes starting at once."""
    applied_now = []
    with psycopg.connect(dsn, autocommit=False, connect_timeout=_connect_timeout(connect_timeout)) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('quivr_pipelines_migrations'))")
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'SET LOCAL search_path TO "{schema}", public')
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, sql in migration_files():
            if version in done:
                continue
            conn.execute(sql)
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name)
            )
            applied_now.append(version)
        conn.commit()
    return applied_now


@functools.cache
def migrate_once(dsn: str, schema: str) -> None:
    """`apply_migrations` at most once per process for a (DSN, schema): a sensor evaluated every
    30 seconds in a long-lived code server must not take the migration lock on every tick."""
    apply_migrations(dsn, schema)


def open_database(settings, migrate: bool = True) -> Database:
    dsn = (
        settings.database_url.get_secret_value()
        if settings.database_url
        else embedded_postgres_dsn(settings.postgres_dir)
    )
    return Database(dsn, schema=settings.database_schema, pool_size=settings.database_pool_size,
                    migrate=migrate, pool_timeout=settings.database_pool_timeout_seconds,
                    connect_timeout=settings.database_connect_timeout_seconds)
