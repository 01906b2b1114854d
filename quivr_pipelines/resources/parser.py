"""`parser`: parsing and chunking, in a pool of worker processes owned by the step.

A run launched by the daemon is a process of its own: its step opens the pool and closes it at
the end. A process that executes many runs one after another (the CLI's `ingest`, the tests,
the benchmarks: `runner.execute_requests`) lends one pool to all of them with
`lend_parser_pool`, so the workers (a spawned interpreter with unstructured and spaCy loaded,
about a second each to start) stay warm from run to run; the lender closes it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import dagster as dg
from pydantic import Field, PrivateAttr

from quivr_pipelines.core.catalog.repository import KbConfig, default_kb_config
from quivr_pipelines.core.parsing.guards import ParseLimits
from quivr_pipelines.core.parsing.workers import ParserPool

# The per-document limits, by the name the settings, this resource and `ParseLimits` give them.
PARSE_LIMIT_FIELDS = {
    "parse_timeout_seconds": "timeout_seconds", "parse_memory_mb": "memory_mb",
    "parse_max_uncompressed_mb": "max_uncompressed_mb", "parse_max_compression_ratio": "max_compression_ratio",
    "parse_max_archive_members": "max_archive_members", "parse_max_cells": "max_cells",
    "parse_max_line_characters": "max_line_characters",
}

_lent: ContextVar[ParserPool | None] = ContextVar("quivr_lent_parser_pool", default=None)


@contextmanager
def lend_parser_pool(workers: int | None = None, limits: ParseLimits | None = None) -> Iterator[ParserPool]:
    """One pool for every step executed in this context (same thread), closed when it ends; a step
    whose parser asks for another size or other limits opens its own."""
    with ParserPool(workers, limits) as pool:
        token = _lent.set(pool)
        try:
            yield pool
        finally:
            _lent.reset(token)


class ParserResource(dg.ConfigurableResource):
    """Parser worker processes for the length of a step (started at the first batch that needs
    them, stopped when the step ends, so a step process never waits at exit for idle workers),
    the upload size limit, each document's parse limits (README, "Bounded parsing"), and the
    chunk sizes a new KB starts with (`kb set` changes a KB's)."""

    workers: int | None = Field(default=None, ge=1, description="Parser processes; unset: one per core.")
    max_upload_size_mb: float = Field(default=25, gt=0)
    chunk_max_characters: int = Field(default=1500, ge=100)
    chunk_new_after_characters: int = Field(default=1200, ge=50)
    chunk_combine_under_characters: int = Field(default=200, ge=0)
    chunk_overlap_characters: int = Field(default=0, ge=0)
    pii: str = Field(default="off", pattern="^(off|detect|mask)$",
                     description="PII mode a new KB starts with: off, detect or mask.")
    parse_timeout_seconds: float = Field(default=ParseLimits.timeout_seconds, gt=0,
                                         description="Wall time one document may take; then parse_timeout.")
    parse_memory_mb: int = Field(default=ParseLimits.memory_mb, ge=1024,
                                 description="Address space of a parser worker; past it: too_complex.")
    parse_max_uncompressed_mb: float = Field(default=ParseLimits.max_uncompressed_mb, gt=0)
    parse_max_compression_ratio: float = Field(default=ParseLimits.max_compression_ratio, gt=1)
    parse_max_archive_members: int = Field(default=ParseLimits.max_archive_members, ge=1)
    parse_max_cells: int = Field(default=ParseLimits.max_cells, ge=1)
    parse_max_line_characters: int = Field(default=ParseLimits.max_line_characters, ge=1)

    _pool: ParserPool | None = PrivateAttr(default=None)

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[ParserResource]:
        lent = _lent.get()
        if (lent is not None and not lent.closed and lent.workers == (self.workers or os.cpu_count() or 1)
                and lent.limits == self.limits):
            self._pool = lent  # the lender's to close
            try:
                yield self
            finally:
                self._pool = None
            return
        with ParserPool(self.workers, self.limits) as pool:
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
    def limits(self) -> ParseLimits:
        return ParseLimits(**{field: getattr(self, name) for name, field in PARSE_LIMIT_FIELDS.items()})

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_size_mb * 1024 * 1024)

    def kb_defaults(self) -> KbConfig:
        return default_kb_config(self)
