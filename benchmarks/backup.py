"""Backup and restore of a backup set at scale (issue 12), against plain copies in the same run.

    .venv/bin/python benchmarks/backup.py [--chunks 100000] [--per-document 50]

A KB of `--chunks` points (384-dimensional vectors, sparse vectors and texts cut from NFCorpus
abstracts) in the embedded engine, and its catalog in the test PostgreSQL (a document row per
`--per-document` chunks and an embedding-cache row per chunk, as ingestion leaves them). Printed:

- backup set: seconds, stored MB, MB/s of the data it covers, against `tar -cf` of the same
  collection folder and `pg_dump -Fc` of the same schema alone, each timed in this run;
- restore of the set into a new schema and collection, seconds and MB/s;
- how long writers waited (the KB locks held for the shard copy and the catalog snapshot) and what
  a reader in another process saw while the set was taken: its longest search and its p95, against
  its p95 before.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "retrieval" / "nfcorpus" / "corpus.jsonl"
KB = "bigkb"

READER = """
import json, sys, time
from pathlib import Path
import numpy as np
from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore
store = EmbeddedStore(Path(sys.argv[1]), keep_open=True)
rng = np.random.default_rng(0)
stop = Path(sys.argv[2])
out = open(sys.argv[3], "w")
while not stop.exists():
    started = time.perf_counter()
    store.search(sys.argv[4], rng.standard_normal(384).tolist(), None, 10, None, "dense")
    out.write(json.dumps([time.time(), (time.perf_counter() - started) * 1000]) + "\\n")
    out.flush()
    time.sleep(0.01)
store.close()
"""


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--per-document", type=int, default=50)
    args = parser.parse_args()

    import psycopg

    from quivr_pipelines.core import generations, sparse
    from quivr_pipelines.core.artifacts import LocalArtifactStore
    from quivr_pipelines.core.backups import catalog as catalog_backup
    from quivr_pipelines.core.backups.backup_set import BackupContext, restore_set, take_backup_set
    from quivr_pipelines.core.catalog.database import Database
    from quivr_pipelines.core.catalog.repository import (
        DocumentRecord,
        DocumentStatus,
        KbConfig,
        ensure_kb,
        record_documents,
        store_embeddings,
    )
    from quivr_pipelines.core.keys import point_id
    from quivr_pipelines.core.vectorstore.base import PointRecord
    from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore

    texts = [json.loads(line)["text"][:900] for line in DATA.open()][:5000]
    work = Path(tempfile.mkdtemp(prefix="backup-bench-"))
    dsn = os.environ.get("QUIVR_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    db = Database(dsn, schema=schema)
    store = EmbeddedStore(work / "qdrant")
    artifacts = LocalArtifactStore(work / "artifacts")
    model = "local:all-MiniLM-L6-v2:384"
    collection = generations.collection_name(KB, model, 1)
    rng = np.random.default_rng(1)
    restored_schema = None
    try:
        started = time.perf_counter()
        ensure_kb(db, KB, KbConfig(name="", chunk_max_characters=1500, chunk_new_after_characters=1200,
                                   chunk_combine_under_characters=200, chunk_overlap_characters=0))
        store.ensure_collection(collection, 384, model)
        generations.register_serving(db, KB, collection, model, 384, {"max_characters": 1500})
        documents = (args.chunks + args.per_document - 1) // args.per_document
        for first in range(0, documents, 20):
            items, cache = [], []
            for d in range(first, min(first + 20, documents)):
                key = f"doc-{d:06d}.txt"
                points = []
                for c in range(min(args.per_document, args.chunks - d * args.per_document)):
                    text = texts[(d * args.per_document + c) % len(texts)]
                    vector = rng.standard_normal(384).astype(np.float32)
                    vector /= np.linalg.norm(vector)
                    points.append(PointRecord(point_id(KB, key, c), vector.tolist(), sparse.document_vector(text),
                                              {"kb": KB, "document_key": key, "chunk_index": c, "text": text}))
                    cache.append((uuid.uuid4().bytes + uuid.uuid4().bytes, vector))
                items.append((KB, key, points))
            store.replace_documents(collection, items)
            record_documents(db, [DocumentRecord(kb=KB, object_key=key, status=DocumentStatus.INGESTED,
                                                 chunk_count=len(points)) for _, key, points in items])
            store_embeddings(db, model, cache)
        store.set_alias(KB, collection)
        print(f"built {args.chunks} chunks in {documents} documents in {time.perf_counter() - started:.0f} s")
        store.close()
        store = EmbeddedStore(work / "qdrant")
        shard_dir = work / "qdrant" / "collections" / collection
        print(f"collection on disk: {folder_bytes(shard_dir) / 1e6:.1f} MB")

        # baselines, same run
        t = time.perf_counter()
        tar_bytes = int(subprocess.run(f"tar -cf - -C {shard_dir.parent} {collection} | wc -c", shell=True,
                                       check=True, capture_output=True, text=True).stdout)
        tar_seconds = time.perf_counter() - t
        t = time.perf_counter()
        with open(os.devnull, "wb") as sink:
            plain = catalog_backup.backup_catalog(dsn, schema, sink)
        dump_seconds = time.perf_counter() - t
        print(f"baseline tar -cf of the collection: {tar_seconds:.2f} s, {tar_bytes / 1e6:.1f} MB "
              f"({tar_bytes / 1e6 / tar_seconds:.0f} MB/s)")
        print(f"baseline pg_dump -Fc of the schema: {dump_seconds:.2f} s, {plain.size / 1e6:.1f} MB "
              f"({plain.size / 1e6 / dump_seconds:.1f} MB/s)")

        # a reader in another process, before and during the backup
        stop, log = work / "stop", work / "reader.jsonl"
        reader = subprocess.Popen([sys.executable, "-c", READER, str(work / "qdrant"), str(stop), str(log), collection],
                                  cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        time.sleep(8)
        backup_started = time.time()
        t = time.perf_counter()
        manifest = take_backup_set(BackupContext(db=db, vectors=store, artifacts=artifacts, say=lambda _: None))
        backup_seconds = time.perf_counter() - t
        backup_ended = time.time()
        time.sleep(1)
        stop.touch()
        reader.wait(60)
        samples = [json.loads(line) for line in log.read_text().splitlines()]
        before = [ms for at, ms in samples if at < backup_started and at > backup_started - 6]
        during = [ms for at, ms in samples if backup_started <= at <= backup_ended + 0.5]
        stored = sum(f["size"] for part in manifest.components.values() for f in part["files"])
        covered = tar_bytes + plain.size
        print(f"backup set: {backup_seconds:.2f} s, stored {stored / 1e6:.1f} MB; covers {covered / 1e6:.1f} MB "
              f"(the tar and the dump): {covered / 1e6 / backup_seconds:.0f} MB/s against "
              f"{covered / 1e6 / (tar_seconds + dump_seconds):.0f} MB/s for tar + pg_dump alone "
              f"(ratio {(tar_seconds + dump_seconds) / backup_seconds:.2f})")
        print(f"writers waited {manifest.components['vectors']['writers_held_seconds']:.2f} s; reader: "
              f"{len(during)} searches during the backup, longest {max(during, default=float('nan')):.0f} ms, "
              f"p95 {percentile(during, 0.95):.1f} ms against {percentile(before, 0.95):.1f} ms before "
              f"({len(before)} searches)")

        t = time.perf_counter()
        result = restore_set(BackupContext(db=db, vectors=store, artifacts=artifacts), manifest.id)
        restore_seconds = time.perf_counter() - t
        restored_schema = result.schema
        print(f"restore into {result.schema} and {len(result.collections)} collection(s): {restore_seconds:.2f} s "
              f"({covered / 1e6 / restore_seconds:.0f} MB/s of the data covered); points "
              f"{list(result.points.values())}")
    finally:
        store.close()
        db.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            for name in (schema, restored_schema):
                if name:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
