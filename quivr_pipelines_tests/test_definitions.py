"""The code location loads and every asset, check, job, schedule and sensor resolves."""

import dagster as dg

from quivr_pipelines.definitions import defs


def test_code_location_resolves_everything():
    definitions = defs()
    graph = definitions.resolve_asset_graph()
    assert dg.AssetKey("indexed_documents") in graph.get_all_asset_keys()
    checks = graph.asset_check_keys
    for name in ("check_kb_documents_ingested", "check_documents_ingested"):
        assert dg.AssetCheckKey(dg.AssetKey("indexed_documents"), name) in checks
    jobs = {job.name for job in definitions.resolve_all_job_defs()}
    assert "ingest_documents_job" in jobs
    for job in definitions.resolve_all_job_defs():
        assert job.name
    for sensor in definitions.sensors or []:
        assert definitions.resolve_sensor_def(sensor.name)
    for schedule in definitions.schedules or []:
        assert definitions.resolve_schedule_def(schedule.name)
    assert {s.name for s in definitions.sensors} >= {"object_store_sensor"}
    assert {s.name for s in definitions.schedules} >= {"vector_index_schedule"}
    assert {"ingest_documents_job", "vector_index_job"} <= jobs
    assert set(definitions.resources) == {"object_store", "vector_store", "embedder", "database", "parser", "sync",
                                      "backups"}
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups == {"indexed_documents": "ingestion", "vector_indexes": "maintenance",
                      "kb_reconciliation": "maintenance", "pruned_documents": "maintenance",
                      "kb_generation": "reembedding", "kb_serving_generation": "reembedding",
                      "retired_generations": "reembedding", "backup_set": "backups",
                      "backup_retention": "backups"}
    assert {"reembed_job", "reembed_rollback_job", "generation_cleanup_job"} <= jobs
    assert {s.name for s in definitions.schedules} >= {"generation_cleanup_schedule", "backup_schedule"}
    assert "backup_job" in jobs
    checks = {key.name for key in graph.asset_check_keys}
    assert {f"check_generation_{name}" for name in ("documents_complete", "dimensions", "fingerprint",
                                                      "payload_indexes", "retrieval_quality")} <= checks
    assert "check_backup_recent" in checks


def test_workspace_file_points_at_the_code_location():
    from pathlib import Path

    import yaml

    workspace = yaml.safe_load((Path(__file__).parents[1] / "workspace.yaml").read_text())
    module = workspace["load_from"][0]["python_module"]["module_name"]
    assert module == "quivr_pipelines.definitions"
