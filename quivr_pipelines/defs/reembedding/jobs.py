"""Re-embedding jobs: build-check-swap, rollback, and the daily cleanup of old generations."""


from datetime import timedelta

import dagster as dg
from pydantic import Field

from quivr_pipelines.core import reembed
from quivr_pipelines.defs.reembedding.assets import GROUP, kb_generation, kb_serving_generation, reembed_context
from quivr_pipelines.resources import DatabaseResource, EmbedderResource, VectorStoreResource

REEMBED_JOB_NAME = "reembed_job"

reembed_job = dg.define_asset_job(
    REEMBED_JOB_NAME, selection=dg.AssetSelection.assets(kb_generation, kb_serving_generation),
    description="Build a KB's next generation (ReembedConfig), check it (blocking), swap the alias to it.")


class RollbackConfig(dg.Config):
    kb: str = Field(description="The knowledge base to serve from its previous generation again.")
    generation: int | None = Field(default=None, description="A retired generation. Unset: the newest one.")


@dg.op(description="Move the KB's alias back to a retired generation (changes since the swap mirrored into it).")
def rollback_generation(context: dg.OpExecutionContext, config: RollbackConfig, vector_store: VectorStoreResource,
                        database: DatabaseResource, embedder: EmbedderResource) -> None:
    ctx = reembed_context(context.run.run_id, vector_store, database, embedder, say=context.log.info)
    result = reembed.rollback(ctx, config.kb, config.generation)
    context.log.info(f"{config.kb}: generation {result.serving.generation} serves again")


@dg.job(name="reembed_rollback_job", tags={"quivr/group": GROUP},
        description="Serve a KB's previous generation again (within the rollback window).")
def reembed_rollback_job():
    rollback_generation()


class CleanupConfig(dg.Config):
    dry_run: bool = Field(default=False, description="Only list what would be dropped.")
    rollback_hours: float | None = Field(default=None, ge=0,
                                         description="The rollback window. Unset: QUIVR_REEMBED_ROLLBACK_HOURS.")


@dg.asset(group_name=GROUP, kinds={"qdrant"}, deps=[kb_serving_generation],
          description="Generations past the rollback window (and failed builds as old), their collections dropped.")
def retired_generations(context: dg.AssetExecutionContext, config: CleanupConfig, vector_store: VectorStoreResource,
                        database: DatabaseResource, embedder: EmbedderResource) -> dg.MaterializeResult:
    from quivr_pipelines.settings import get_settings

    hours = config.rollback_hours if config.rollback_hours is not None else get_settings().reembed_rollback_hours
    ctx = reembed_context(context.run.run_id, vector_store, database, embedder, say=context.log.info)
    dropped = reembed.cleanup(ctx, timedelta(hours=hours), dry_run=config.dry_run)
    for gen in dropped:
        context.log.info(f"{'would drop' if config.dry_run else 'dropped'} {gen.kb} generation {gen.generation} "
                         f"({gen.collection}, {gen.state})")
    return dg.MaterializeResult(metadata={
        "dry_run": config.dry_run, "rollback_hours": hours, "dropped": len(dropped),
        "collections": dg.MetadataValue.json([g.collection for g in dropped][:200])})


generation_cleanup_job = dg.define_asset_job("generation_cleanup_job", selection=[retired_generations])

generation_cleanup_schedule = dg.ScheduleDefinition(
    name="generation_cleanup_schedule", job=generation_cleanup_job, cron_schedule="15 5 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily: drop generations retired longer ago than the rollback window (QUIVR_REEMBED_ROLLBACK_HOURS).")
