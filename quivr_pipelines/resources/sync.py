"""`sync`: how the object-store sensor batches work and when it deletes."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
from pydantic import Field

from quivr_pipelines.core.sync import SyncPolicy


class SyncResource(dg.ConfigurableResource):
    """QUIVR_DOCUMENTS_PER_RUN and QUIVR_SYNC_*: read by `object_store_sensor` every tick and by
    `pruned_documents` (its default for `dry_run`)."""

    documents_per_run: int = Field(default=100, ge=1)
    objects_per_tick: int = Field(default=50_000, ge=1)
    max_run_megabytes: int = Field(default=256, ge=1)
    request_timeout_minutes: int = Field(default=60, ge=1)
    delete_after_misses: int = Field(default=2, ge=1)
    delete_dry_run: bool = False

    def policy(self) -> SyncPolicy:
        return SyncPolicy(
            documents_per_run=self.documents_per_run,
            max_run_bytes=self.max_run_megabytes * 1024 * 1024,
            request_timeout=timedelta(minutes=self.request_timeout_minutes),
            delete_after_misses=self.delete_after_misses,
        )
