"""`object_store_sensor`: new, changed and deleted objects of every KB become batched runs.

Each tick lists at most QUIVR_SYNC_OBJECTS_PER_TICK objects, resuming where the previous tick
stopped (the cursor keeps one key per KB), so a tick stays short whatever the prefix size; a
listing pass over a KB may span several ticks. The planning is `core.sync.plan_sync` (plain
Python); this module only turns its plan into Dagster requests: a partition for each new KB,
one run per batch of at most QUIVR_DOCUMENTS_PER_RUN documents and QUIVR_SYNC_MAX_RUN_MEGABYTES
of source, and a `prune_documents_job` run once documents have been missed by
QUIVR_SYNC_DELETE_AFTER_MISSES consecutive passes. Objects the store refuses (names that are not
UTF-8 or hold control, bidi or zero-width characters, links) are recorded `hostile_key` by the
planning itself, under their escaped names, and never become runs: one such key no longer stops
the tick (it raised UnicodeEncodeError before, every tick, for every KB).
"""

import json
import time

import dagster as dg

from quivr_pipelines.core.sync import SyncPass, plan_sync
from quivr_pipelines.defs.ingestion.jobs import ingest_documents_job, ingest_run_request
from quivr_pipelines.defs.ingestion.partitions import kb_partitions
from quivr_pipelines.defs.maintenance.jobs import prune_documents_job, prune_run_request
from quivr_pipelines.defs.maintenance.prune import PruneConfig
from quivr_pipelines.resources import DatabaseResource, ObjectStoreResource, ParserResource, SyncResource


def sync_requests(plan: SyncPass, instance: dg.DagsterInstance, run_key_prefix: str,
                  force: bool = False, prune: PruneConfig | None = None) -> dg.SensorResult:
    """The Dagster side of a sync plan: partitions for new KBs, runs, and a prune run."""
    existing = set(instance.get_dynamic_partitions(kb_partitions.name))
    added = [kb for kb in plan.kbs if kb not in existing]
    requests = [ingest_run_request(batch, run_key=f"{run_key_prefix}:{i}", force=force)
                for i, batch in enumerate(plan.batches)]
    if plan.confirmed_missing:
        requests.append(prune_run_request(plan.confirmed_missing, f"{run_key_prefix}:prune", prune or PruneConfig()))
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[kb_partitions.build_add_request(added)] if added else [],
        skip_reason=None if requests or added else dg.SkipReason(f"nothing to do: {json.dumps(plan.counts)}"),
    )


@dg.sensor(
    jobs=[ingest_documents_job, prune_documents_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Lists every KB's objects incrementally; requests batched ingestion runs for new "
                "and changed documents and a prune run for documents confirmed deleted.",
)
def object_store_sensor(
    context: dg.SensorEvaluationContext,
    object_store: ObjectStoreResource,
    database: DatabaseResource,
    parser: ParserResource,
    sync: SyncResource,
) -> dg.SensorResult:
    state = json.loads(context.cursor) if context.cursor else {}
    tick = state.pop("tick", 0) + 1
    started = time.perf_counter()
    plan = plan_sync(object_store.get(), database.get(), sync.policy(), parser.kb_defaults(),
                     cursor=state, max_objects=sync.objects_per_tick)
    result = sync_requests(plan, context.instance, run_key_prefix=f"tick-{tick}",
                           prune=PruneConfig(dry_run=sync.delete_dry_run))
    context.update_cursor(json.dumps({**plan.cursor, "tick": tick}, sort_keys=True))
    context.log.info(f"tick {tick} in {time.perf_counter() - started:.1f}s: {json.dumps(plan.counts)}"
                     f"{' (pass continues next tick)' if plan.cursor['after'] else ''}")
    return result
