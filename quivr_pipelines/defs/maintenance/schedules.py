"""Maintenance schedules (UTC): nightly index builds, daily reconciliation."""

import dagster as dg

from quivr_pipelines.defs.maintenance.jobs import kb_reconciliation_job, vector_index_job

vector_index_schedule = dg.ScheduleDefinition(
    name="vector_index_schedule",
    job=vector_index_job,
    cron_schedule="0 3 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly: index what was ingested during the day, on a copy of each collection (queries "
                "keep being answered; writes to a collection wait while its index is built).",
)

kb_reconciliation_schedule = dg.ScheduleDefinition(
    name="kb_reconciliation_schedule",
    job=kb_reconciliation_job,
    cron_schedule="30 4 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily full reconciliation of every KB (drift found and repaired in the metadata).",
)
