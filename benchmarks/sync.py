"""Object-store sync at scale, on the embedded default. Figures are printed, never asserted.

    python benchmarks/sync.py tick  [--objects 100000]
    python benchmarks/sync.py e2e   [--documents 10000]

tick: a local folder with N small objects and a catalog that already knows them (ingested rows
written directly), then sensor ticks over it: the first pass (all new: runs requested) and a steady-state pass (nothing changed). Prints seconds per tick and per pass.

e2e: N new small text documents through the real sensor and the runs it requests (executed one
after another in this process, as a single run worker would; a run launched as its own process
adds its start-up time, see the README), and after each run the embedder alone on the chunks that
run wrote, so both rates are measured under the same machine load; then a no-change re-sync.
Prints runs, documents/s, the embedder-only throughput and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from _common import drop_schema

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def _environment(work: Path) -> None:
    os.environ["QUIVR_DATA_DIR"] = str(work / "data")
    os.environ.setdefault("QUIVR_DATABASE_SCHEMA", f"bench_{int(time.time())}")
    os.chdir(work)


def _evaluate(instance, definitions, cursor):
    import dagster as dg

    from quivr_pipelines.defs.ingestion.sensors import object_store_sensor

    started = time.perf_counter()
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=definitions.resources) as context:
        result = object_store_sensor(context)
    return result, context.cursor, time.perf_counter() - started


def _passes(cursor: str | None) -> int:
    return sum(json.loads(cursor)["passes"].values()) if cursor else 0


def bench_tick(objects: int) -> dict:
    import dagster as dg

    from quivr_pipelines.core.factory import open_database
    from quivr_pipelines.definitions import defs
    from quivr_pipelines.settings import get_settings

    settings = get_settings()
    folder = settings.inbox_dir / "big"
    for i in range(objects):
        sub = folder / f"part-{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"doc-{i:06d}.txt").write_text(f"document {i}\n")
    instance, definitions = dg.DagsterInstance.ephemeral(), defs()

    first_pass, cursor, runs = [], None, 0
    while True:  # first pass: every object is new
        result, cursor, seconds = _evaluate(instance, definitions, cursor)
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        first_pass.append(seconds)
        runs += len(result.run_requests or [])
        if _passes(cursor) >= 1:
            break

    db = open_database(settings)  # pretend those runs happened: the catalog knows every object
    with db.transaction() as conn:
        conn.execute("UPDATE documents SET status = 'ingested', etag = requested_etag, "
                     "embedding_model = 'local:all-MiniLM-L6-v2:384', requested_etag = NULL")
    db.close()
    steady = []
    while _passes(cursor) < 2:
        result, cursor, seconds = _evaluate(instance, definitions, cursor)
        assert not result.run_requests
        steady.append(seconds)
    return {
        "objects": objects,
        "objects_per_tick": settings.sync_objects_per_tick,
        "first_pass_ticks_seconds": [round(s, 2) for s in first_pass],
        "first_pass_runs_requested": runs,
        "steady_pass_ticks_seconds": [round(s, 2) for s in steady],
        "max_tick_seconds": round(max(first_pass + steady), 2),
        "sensor_timeout_seconds": 60,
    }


def bench_e2e(documents: int) -> dict:
    import dagster as dg

    from quivr_pipelines.core.catalog import repository
    from quivr_pipelines.core.factory import build_embedder, build_vector_store, open_database
    from quivr_pipelines.definitions import defs
    from quivr_pipelines.runner import execute_requests
    from quivr_pipelines.settings import get_settings

    settings = get_settings()
    passages = [json.loads(line)["text"] for line in (SHARED / "retrieval/xquad_en/passages.jsonl").open()]
    folder = settings.inbox_dir / "e2e"
    folder.mkdir(parents=True)
    for i in range(documents):  # small documents: one paragraph each, one chunk each
        text = passages[i % len(passages)]
        (folder / f"doc-{i:05d}.txt").write_text(f"Note {i}. {text[: 300 + (i % 7) * 40]}\n")
    embedder = build_embedder(settings)
    instance, definitions = dg.DagsterInstance.ephemeral(), defs()
    db = open_database(settings)
    baseline = {"chunks": 0, "seconds": 0.0}

    def embed_alone(run_id: str) -> None:
        """The embedder alone on the chunks this run wrote, right after the run: the baseline
        sees the same machine load as the run it is compared with."""
        rows = repository.get_documents(db, "e2e")
        keys = sorted(k for k, r in rows.items() if r["dagster_run_id"] == run_id)
        store = build_vector_store(settings, keep_open=True)
        texts = [p.payload["text"] for key in keys for p in store.document_points("e2e", "e2e", key)]
        store.close()
        started = time.perf_counter()
        for start in range(0, len(texts), settings.embedding_batch_size):
            embedder.embed(texts[start:start + settings.embedding_batch_size])
        baseline["seconds"] += time.perf_counter() - started
        baseline["chunks"] += len(texts)

    def sync(measure_baseline: bool) -> tuple[int, float]:
        cursor, runs, seconds = None, 0, 0.0
        while True:
            started = time.perf_counter()
            result, cursor, _ = _evaluate(instance, definitions, cursor)
            summary = execute_requests(instance, definitions, result)
            runs += summary.runs
            seconds += time.perf_counter() - started
            if measure_baseline:
                for run_id in summary.run_ids:
                    embed_alone(run_id)
            if _passes(cursor) >= 1 and not result.run_requests:
                return runs, seconds

    runs, first_seconds = sync(measure_baseline=True)
    rows = repository.get_documents(db, "e2e")
    resync_runs, resync_seconds = sync(measure_baseline=False)
    db.close()
    chunks = sum(r["chunk_count"] for r in rows.values())
    return {
        "documents": documents,
        "ingested": sum(r["status"] == "ingested" for r in rows.values()),
        "chunks": chunks,
        "runs": runs,
        "first_sync_seconds": round(first_seconds, 1),
        "documents_per_second": round(documents / first_seconds, 2),
        "chunks_per_second": round(chunks / first_seconds, 2),
        "embedder_only_chunks": baseline["chunks"],
        "embedder_only_seconds": round(baseline["seconds"], 1),
        "embedder_only_chunks_per_second": round(baseline["chunks"] / baseline["seconds"], 2),
        "end_to_end_vs_embedder_only": round((chunks / first_seconds) / (baseline["chunks"] / baseline["seconds"]), 3),
        "no_change_resync_seconds": round(resync_seconds, 2),
        "no_change_resync_runs": resync_runs,
        "no_change_resync_vs_first": round(resync_seconds / first_seconds, 4),
        "embedder": embedder.fingerprint,
        "cores": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["tick", "e2e"])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--documents", type=int, default=10_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="quivr-sync-bench-"))
    _environment(work)
    try:
        result = bench_tick(args.objects) if args.which == "tick" else bench_e2e(args.documents)
        print(json.dumps(result, indent=2))
    finally:
        drop_schema()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
