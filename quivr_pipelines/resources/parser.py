"""`parser`: parsing and chunking, in a pool of worker processes owned by the step."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pydantic import Field, PrivateAttr

from quivr_pipelines.core.catalog.repository import KbConfig, default_kb_config
from quivr_pipelines.core.parsing.workers import ParserPool


class ParserResource(dg.ConfigurableResource):
    """Parser worker processes for the length of a step (started at the first batch that needs
    them, stopped when the step ends, so a step process never waits at exit for idle workers),
    the upload size limit, and the chunk sizes a new KB starts with (`kb set` changes a KB's)."""

    workers: int | None = Field(default=None, ge=1, description="Parser processes; unset: one per core.")
    max_upload_size_mb: float = Field(default=25, gt=0)
    chunk_max_characters: int = Field(default=1500, ge=100)
    chunk_new_after_characters: int = Field(default=1200, ge=50)
    chunk_combine_under_characters: int = Field(default=200, ge=0)
    chunk_overlap_characters: int = Field(default=0, ge=0)

    _pool: ParserPool | None = PrivateAttr(default=None)

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[ParserResource]:
        with ParserPool(self.workers) as pool:
            self._pool = pool
            try:
                yield self
            finally:
                self._pool = None

    @property
    def pool(self) -> ParserPool | None:
        """The step's pool; None outside a step (callers then use a pool of their own)."""
        return self._pool

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_size_mb * 1024 * 1024)

    def kb_defaults(self) -> KbConfig:
        return default_kb_config(self)
