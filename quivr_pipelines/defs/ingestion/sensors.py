"""`object_store_sensor`: new and changed objects of every KB become batched ingestion runs."""


from datetime import timedelta

import dagster as dg

from quivr_pipelines.core.catalog import repository
from quivr_pipelines.core.factory import build_object_store, kb_defaults, open_database
from quivr_pipelines.core.keys import partition_key
from quivr_pipelines.core.sync import plan_kb
from quivr_pipelines.defs.ingestion.jobs import ingest_documents_job
from quivr_pipelines.defs.ingestion.partitions import documents_partitions
from quivr_pipelines.defs.ingestion.planning import batch_ranges, partition_order, run_request
from quivr_pipelines.settings import get_settings

# A requested document not done after this long is requested again (its run died or was lost).
REQUEST_TIMEOUT = timedelta(hours=1)
MAX_BYTES_PER_RUN = 256 * 1024 * 1024


def plan_sync_runs(instance: dg.DagsterInstance, settings, run_key_prefix: str,
                   kbs: list[str] | None = None, force: bool = False) -> tuple[dg.SensorResult, dict]:
    """Plan every KB (or `kbs`): partitions to add and batched run requests; `force` plans all
    listed documents, changed or not."""
    store = build_object_store(settings)
    db = open_database(settings)
    try:
        new_partitions, targets, sizes, counts = [], [], {}, {"new": 0, "changed": 0, "retry": 0,
                                                              "unchanged": 0, "in_flight": 0}
        for kb in kbs or store.list_kbs():
            repository.ensure_kb(db, kb, kb_defaults(settings))
            plan = plan_kb(store, db, kb, request_timeout=None if force else REQUEST_TIMEOUT)
            if force:
                plan.changed, plan.unchanged = plan.changed + [
                    k for k in plan.etags if k not in set(plan.to_ingest)], 0
            for name in ("new", "changed", "retry"):
                counts[name] += len(getattr(plan, name))
            counts["unchanged"] += plan.unchanged
            counts["in_flight"] += plan.in_flight
            keys = {key: partition_key(kb, key) for key in plan.to_ingest}
            new_partitions.extend(keys[k] for k in plan.new)
            targets.extend(keys.values())
            sizes.update({keys[k]: plan.listed_bytes[k] for k in plan.to_ingest})
            repository.mark_requested(db, kb, {k: plan.etags[k] for k in plan.to_ingest})
    finally:
        db.close()
    existing = set(instance.get_dynamic_partitions(documents_partitions.name))
    added = [k for k in dict.fromkeys(new_partitions) if k not in existing]
    order = partition_order(instance, added)
    ranges = batch_ranges(order, targets, settings.documents_per_run, sizes, MAX_BYTES_PER_RUN)
    return dg.SensorResult(
        run_requests=[run_request(first, last, n, run_key=f"{run_key_prefix}:{i}")
                      for i, (first, last, n) in enumerate(ranges)],
        dynamic_partitions_requests=[documents_partitions.build_add_request(added)] if added else [],
        skip_reason=None if ranges else dg.SkipReason(f"nothing to ingest: {counts}"),
    ), counts


@dg.sensor(
    job=ingest_documents_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Lists every KB's objects, registers new documents and requests batched runs.",
)
def object_store_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    result, counts = plan_sync_runs(context.instance, get_settings(), run_key_prefix=context.cursor or "0")
    context.update_cursor(str(int(context.cursor or "0") + 1))
    context.log.info(f"object store sync: {counts}, runs requested: {len(result.run_requests or [])}")
    return result
