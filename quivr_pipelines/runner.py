"""Run ingestion now, from the command line, as real Dagster runs in the project's instance.

The same planning as `object_store_sensor` (register partitions, batch into ranges), executed
in this process one run after another, so the runs, materializations and per-document checks
show up in `dagster dev` exactly as sensor-launched ones do.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from tqdm import tqdm

from quivr_pipelines.settings import Settings



def dagster_instance(settings: Settings) -> dg.DagsterInstance:
    """$DAGSTER_HOME if set; else ./dagster.yaml (as `dagster dev` reads it); else a SQLite
    instance under $QUIVR_DATA_DIR/dagster."""
    import os

    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    if (Path.cwd() / "dagster.yaml").exists():
        return dg.DagsterInstance.from_config(str(Path.cwd()))
    home = (settings.data_dir / "dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.from_config(str(home))


def ingest_now(settings: Settings, kbs: list[str] | None = None, force: bool = False,
               progress: bool = False, instance: dg.DagsterInstance | None = None) -> dict:
    from quivr_pipelines.definitions import defs
    from quivr_pipelines.defs.ingestion.assets import FORCE_TAG
    from quivr_pipelines.defs.ingestion.planning import INGEST_JOB_NAME
    from quivr_pipelines.defs.ingestion.sensors import plan_sync_runs

    instance = instance or dagster_instance(settings)
    result, counts, _ = plan_sync_runs(instance, settings, run_key_prefix="cli", kbs=kbs, force=force)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    definitions = defs()
    job = definitions.resolve_job_def(INGEST_JOB_NAME)
    requests = [r for r in result.run_requests or [] if r.job_name == INGEST_JOB_NAME]
    prune = [r for r in result.run_requests or [] if r.job_name != INGEST_JOB_NAME]
    total = sum(int(r.tags["quivr/documents"]) for r in requests)
    summary = {"planned": counts, "runs": 0, "runs_failed": 0, "documents": total, "run_ids": []}
    with tqdm(total=total, desc="ingesting", unit="doc", disable=not progress or total == 0) as bar:
        for request in requests:
            tags = dict(request.tags)
            if force:
                tags[FORCE_TAG] = "true"
            outcome = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
            summary["runs"] += 1
            summary["run_ids"].append(outcome.run_id)
            if not outcome.success:
                summary["runs_failed"] += 1
            bar.update(int(request.tags["quivr/documents"]))
    for request in prune:  # documents confirmed gone from the store
        outcome = definitions.resolve_job_def(request.job_name).execute_in_process(
            instance=instance, tags=dict(request.tags), raise_on_error=False)
        summary["runs"] += 1
        summary["run_ids"].append(outcome.run_id)
        summary["runs_failed"] += 0 if outcome.success else 1
    return summary
