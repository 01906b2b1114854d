"""`object_store_sensor`: new, changed and deleted objects of every KB become batched runs.

Each tick lists at most QUIVR_SYNC_OBJECTS_PER_TICK objects, resuming where the previous tick
stopped (the cursor keeps one key per KB), so a tick stays short whatever the prefix size; a
listing pass over a KB may span several ticks. New documents become dynamic partitions; new,
changed and retryable documents are grouped into partition-key-range runs of at most
QUIVR_DOCUMENTS_PER_RUN documents and QUIVR_SYNC_MAX_RUN_MEGABYTES of source each. Documents
missed by QUIVR_SYNC_DELETE_AFTER_MISSES consecutive passes are handed to `prune_documents_job`.
"""

import json
import time
from datetime import timedelta

import dagster as dg

from quivr_pipelines.core.catalog import repository
from quivr_pipelines.core.factory import build_object_store, kb_defaults, open_database
from quivr_pipelines.core.keys import partition_key
from quivr_pipelines.core.sync import plan_kb
from quivr_pipelines.defs.ingestion.deletions import PRUNE_JOB_NAME, prune_documents_job
from quivr_pipelines.defs.ingestion.jobs import ingest_documents_job
from quivr_pipelines.defs.ingestion.partitions import documents_partitions
from quivr_pipelines.defs.ingestion.planning import batch_ranges, partition_order, run_request
from quivr_pipelines.settings import get_settings

COUNTERS = ("new", "changed", "retry", "unchanged", "in_flight", "missing", "listed")


def plan_sync_runs(instance: dg.DagsterInstance, settings, run_key_prefix: str,
                   kbs: list[str] | None = None, force: bool = False,
                   cursor: dict | None = None, max_objects: int | None = None):
    """Plan every KB (or `kbs`): partitions to add, batched run requests and, when documents
    are confirmed gone, a prune run. `force` plans every listed document. With `cursor` and
    `max_objects`, list at most that many objects, resuming after the cursor's keys.
    Returns (SensorResult, counts, next cursor)."""
    cursor = {"after": {}, "passes": {}, **(cursor or {})}
    store = build_object_store(settings)
    db = open_database(settings)
    counts = dict.fromkeys(COUNTERS, 0)
    new_partitions, targets, sizes, confirmed = [], [], {}, 0
    budget = max_objects
    try:
        for kb in kbs or store.list_kbs():
            if budget is not None and budget <= 0:
                break
            repository.ensure_kb(db, kb, kb_defaults(settings))
            timeout = None if force else timedelta(minutes=settings.sync_request_timeout_minutes)
            plan = plan_kb(store, db, kb, request_timeout=timeout,
                           after=cursor["after"].get(kb), max_objects=budget)
            if force:
                planned = set(plan.to_ingest)
                plan.changed += [k for k in plan.etags if k not in planned]
                plan.unchanged = plan.in_flight = 0
            if budget is not None:
                budget -= plan.listed
            if plan.next_after is None:
                cursor["after"].pop(kb, None)
                cursor["passes"][kb] = cursor["passes"].get(kb, 0) + 1
            else:
                cursor["after"][kb] = plan.next_after
            for name in ("new", "changed", "retry", "missing"):
                counts[name] += len(getattr(plan, name))
            for name in ("unchanged", "in_flight", "listed"):
                counts[name] += getattr(plan, name)
            keys = {key: partition_key(kb, key) for key in plan.to_ingest}
            new_partitions.extend(keys[k] for k in plan.new)
            targets.extend(keys.values())
            sizes.update({keys[k]: plan.listed_bytes[k] for k in plan.to_ingest})
            repository.mark_requested(db, kb, {k: plan.etags[k] for k in plan.to_ingest})
            passes = repository.count_missing(db, kb, plan.missing, plan.seen_again)
            confirmed += sum(1 for n in passes.values() if n >= settings.sync_delete_after_misses)
    finally:
        db.close()
    existing = set(instance.get_dynamic_partitions(documents_partitions.name))
    added = [k for k in dict.fromkeys(new_partitions) if k not in existing]
    ranges = batch_ranges(partition_order(instance, added), targets, settings.documents_per_run,
                          sizes, settings.sync_max_run_megabytes * 1024 * 1024)
    requests = [run_request(first, last, n, run_key=f"{run_key_prefix}:{i}")
                for i, (first, last, n) in enumerate(ranges)]
    if confirmed:
        requests.append(dg.RunRequest(run_key=f"{run_key_prefix}:prune", job_name=PRUNE_JOB_NAME,
                                      tags={"quivr/confirmed_missing": str(confirmed)}))
    counts["confirmed_missing"] = confirmed
    counts["runs"] = len(ranges)
    result = dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[documents_partitions.build_add_request(added)] if added else [],
        skip_reason=None if requests else dg.SkipReason(f"nothing to do: {json.dumps(counts)}"),
    )
    return result, counts, cursor


@dg.sensor(
    jobs=[ingest_documents_job, prune_documents_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Lists every KB's objects incrementally; requests batched ingestion runs for new "
                "and changed documents and a prune run for documents confirmed deleted.",
)
def object_store_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    settings = get_settings()
    state = json.loads(context.cursor) if context.cursor else {}
    tick = state.get("tick", 0) + 1
    started = time.perf_counter()
    result, counts, state = plan_sync_runs(
        context.instance, settings, run_key_prefix=f"tick-{tick}", cursor=state,
        max_objects=settings.sync_objects_per_tick)
    state["tick"] = tick
    context.update_cursor(json.dumps(state, sort_keys=True))
    context.log.info(f"tick {tick} in {time.perf_counter() - started:.1f}s: {json.dumps(counts)}"
                     f"{' (pass continues next tick)' if state['after'] else ''}")
    return result
