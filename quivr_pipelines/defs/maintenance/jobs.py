"""Maintenance jobs: index builds, reconciliation, pruning; and the prune run request."""

from __future__ import annotations

import dagster as dg

from quivr_pipelines.defs.maintenance.prune import PruneConfig, pruned_documents
from quivr_pipelines.defs.maintenance.reconciliation import kb_reconciliation
from quivr_pipelines.defs.maintenance.vector_indexes import vector_indexes

PRUNE_JOB_NAME = "prune_documents_job"
CONFIRMED_MISSING_TAG = "quivr/confirmed_missing"

vector_index_job = dg.define_asset_job("vector_index_job", selection=[vector_indexes])
kb_reconciliation_job = dg.define_asset_job("kb_reconciliation_job", selection=[kb_reconciliation])
prune_documents_job = dg.define_asset_job(PRUNE_JOB_NAME, selection=[pruned_documents])


def prune_run_request(confirmed: int, run_key: str, config: PruneConfig) -> dg.RunRequest:
    return dg.RunRequest(run_key=run_key, job_name=PRUNE_JOB_NAME,
                         run_config=dg.RunConfig(ops={pruned_documents.op.name: config}),
                         tags={CONFIRMED_MISSING_TAG: str(confirmed)})
