"""Execute planned runs now, in this process, as real Dagster runs in the project's instance.

The one place that carries out what the sensor asks for without a daemon: the CLI (`ingest`,
`demo`), the tests and the benchmarks all call `execute_requests`, so the runs,
materializations and checks they record show up in `dagster dev` exactly as sensor-launched
ones do. Its runs share one parser pool (`lend_parser_pool`), warm from run to run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from tqdm import tqdm

from quivr_pipelines.resources.parser import lend_parser_pool
from quivr_pipelines.settings import Settings

# What a run prints on the console: Dagster's DEBUG event lines are noise for a CLI user (they
# are all in the instance's event log, shown by `dagster dev`).
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class ExecutionSummary:
    runs: int = 0
    runs_failed: int = 0
    documents: int = 0
    run_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"runs": self.runs, "runs_failed": self.runs_failed, "documents": self.documents,
                "run_ids": self.run_ids}


def _instance_home(settings: Settings) -> tuple[str, Path]:
    """Which instance the CLI records runs in, and its folder: $DAGSTER_HOME if set ("env");
    else ./dagster.yaml, as `dagster dev` reads it ("cwd"); else a SQLite instance under
    $QUIVR_DATA_DIR/dagster ("data")."""
    if os.environ.get("DAGSTER_HOME"):
        return "env", Path(os.environ["DAGSTER_HOME"])
    if (Path.cwd() / "dagster.yaml").exists():
        return "cwd", Path.cwd()
    return "data", (settings.data_dir / "dagster").resolve()


def dagster_instance(settings: Settings) -> dg.DagsterInstance:
    kind, home = _instance_home(settings)
    if kind == "env":
        return dg.DagsterInstance.get()
    home.mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.from_config(str(home))


def dagster_ui_command(settings: Settings) -> tuple[str, str]:
    """Where `dagster_instance` records runs, and the command that shows them in the UI."""
    kind, home = _instance_home(settings)
    if kind == "env":
        return str(home), "dagster dev"
    if kind == "cwd":
        return f"{home} (dagster.yaml)", "dagster dev"
    return str(home), f"DAGSTER_HOME={home} dagster dev -m quivr_pipelines.definitions"


def execute_requests(instance: dg.DagsterInstance, definitions: dg.Definitions, result: dg.SensorResult,
                     progress: bool = False, quiet: bool = True,
                     on_run=None) -> ExecutionSummary:
    """Add the partitions `result` asks for, then execute its run requests one after another.
    `on_run(request, run_result)` is called after each run (benchmarks measure there)."""
    from quivr_pipelines.defs.ingestion.jobs import DOCUMENTS_TAG

    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    requests = list(result.run_requests or [])
    summary = ExecutionSummary(documents=sum(int(r.tags.get(DOCUMENTS_TAG, 0)) for r in requests))
    parser = definitions.resources.get("parser")
    with lend_parser_pool(getattr(parser, "workers", None), getattr(parser, "limits", None)), \
            tqdm(total=summary.documents, desc="ingesting", unit="doc",
                 disable=not progress or summary.documents == 0) as bar:
        for request in requests:
            job = definitions.resolve_job_def(request.job_name)
            run_config = dict(request.run_config or {})
            if quiet:  # the request's own logger settings, if any, win
                run_config["loggers"] = {**QUIET["loggers"], **(run_config.get("loggers") or {})}
            outcome = job.execute_in_process(
                instance=instance, run_config=run_config, partition_key=request.partition_key,
                tags=dict(request.tags), raise_on_error=False)
            summary.runs += 1
            summary.run_ids.append(outcome.run_id)
            summary.runs_failed += 0 if outcome.success else 1
            bar.update(int(request.tags.get(DOCUMENTS_TAG, 0)))
            if on_run is not None:
                on_run(request, outcome)
    return summary


def ingest_now(settings: Settings, kbs: list[str] | None = None, force: bool = False,
               progress: bool = False, instance: dg.DagsterInstance | None = None) -> dict:
    """Plan every KB (or `kbs`) in full, as one sensor pass would, and run the plan now."""
    from dotenv import load_dotenv

    from quivr_pipelines.core.factory import build_object_store, open_database
    from quivr_pipelines.core.sync import plan_sync
    from quivr_pipelines.definitions import defs
    from quivr_pipelines.defs.ingestion.sensors import sync_requests
    from quivr_pipelines.defs.maintenance.prune import PruneConfig
    from quivr_pipelines.resources import resources_from_settings

    # Secrets are bound as EnvVars, read from the environment when a run starts: a `.env` file
    # (which Settings reads) must be in the environment of these in-process runs too.
    load_dotenv(Path.cwd() / ".env", override=False)
    instance = instance or dagster_instance(settings)
    bound = resources_from_settings(settings)
    db = open_database(settings)
    try:
        plan = plan_sync(build_object_store(settings), db, bound["sync"].policy(),
                         bound["parser"].kb_defaults(), kbs=kbs, force=force)
    finally:
        db.close()
    result = sync_requests(plan, instance, run_key_prefix="cli", force=force,
                           prune=PruneConfig(dry_run=bound["sync"].delete_dry_run))
    summary = execute_requests(instance, defs(), result, progress=progress)
    return {"planned": plan.counts, **summary.as_dict()}



def run_job(settings: Settings, job_name: str, run_config: dict, watch=None,
            instance: dg.DagsterInstance | None = None) -> dg.ExecuteInProcessResult:
    """Execute one job of the code location now, in this process, as a run of the instance (the
    CLI's `reembed`); `watch()` is called about once a second meanwhile (a progress bar)."""
    import threading

    from dotenv import load_dotenv

    from quivr_pipelines.definitions import defs

    load_dotenv(Path.cwd() / ".env", override=False)
    instance = instance or dagster_instance(settings)
    definitions = defs()
    job = definitions.resolve_job_def(job_name)
    stop = threading.Event()

    def poll():
        while not stop.wait(1.0):
            watch()

    watcher = threading.Thread(target=poll, daemon=True) if watch else None
    if watcher:
        watcher.start()
    parser = definitions.resources.get("parser")
    try:
        with lend_parser_pool(getattr(parser, "workers", None), getattr(parser, "limits", None)):
            return job.execute_in_process(instance=instance, raise_on_error=False,
                                          run_config={**run_config, "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})
    finally:
        stop.set()
        if watcher:
            watcher.join()
            watch()
