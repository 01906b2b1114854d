"""`database`: the catalog. An embedded PostgreSQL (the twin) or any PostgreSQL DSN."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from quivr_pipelines.core.catalog.database import Database, embedded_postgres_dsn, migrate_once
from quivr_pipelines.resources.base import ClientResource


class DatabaseResource(ClientResource):
    """With `url` (QUIVR_DATABASE_URL) that server; without, the embedded PostgreSQL under
    `embedded_dir`. Migrations run once per process, not on every sensor tick."""

    url: str | None = Field(default=None, description="From QUIVR_DATABASE_URL; never shown.")
    embedded_dir: str | None = Field(default=None, description="Data folder of the embedded PostgreSQL.")
    schema_name: str = "quivr"
    pool_size: int = Field(default=5, ge=1, le=100)

    def dsn(self) -> str:
        if self.url:
            return self.url
        if not self.embedded_dir:
            raise ValueError("DatabaseResource needs url or embedded_dir")
        return embedded_postgres_dsn(Path(self.embedded_dir))

    def get(self) -> Database:
        return self._get()

    def _build(self) -> Database:
        dsn = self.dsn()
        migrate_once(dsn, self.schema_name)
        return Database(dsn, schema=self.schema_name, pool_size=self.pool_size, migrate=False)
