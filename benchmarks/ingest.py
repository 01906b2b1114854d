"""Ingestion throughput on the embedded default, against the embedder alone on the same chunks.

    python benchmarks/ingest.py [--synthetic N] [--no-shared] [--keep DIR]

Ingests ../shared/data/docs plus N synthetic text documents (built from XQuAD paragraphs)
through the real Dagster runs (`quivr-pipelines ingest`), then embeds the very same chunk texts
with the embedder alone, in the same process and run. Prints documents/s, chunks/s, the
embedder-only chunks/s and the ratio. Uses QUIVR_DATABASE_URL if set, else the embedded
PostgreSQL, in a throw-away data directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import drop_schema

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def synthetic_documents(target: Path, count: int) -> None:
    passages = [json.loads(line) for line in (SHARED / "retrieval/xquad_en/passages.jsonl").open()]
    target.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        picked = [passages[(i * 7 + j) % len(passages)] for j in range(3)]
        body = "\n\n".join(f"{p['title']}\n\n{p['text']}" for p in picked)
        (target / f"synthetic-{i:05d}.txt").write_text(f"Synthetic document {i}\n\n{body}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", type=int, default=200)
    parser.add_argument("--no-shared", action="store_true", help="skip ../shared/data/docs")
    parser.add_argument("--keep", type=Path, help="use (and keep) this data directory")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="quivr-bench-"))
    os.environ["QUIVR_DATA_DIR"] = str(work / "data")
    os.environ.setdefault("QUIVR_DATABASE_SCHEMA", f"bench_{int(time.time())}")
    os.chdir(work)
    from quivr_pipelines.settings import get_settings

    settings = get_settings()
    inbox = settings.inbox_dir / "bench"
    if not args.no_shared:
        shutil.copytree(SHARED / "docs", inbox, ignore=shutil.ignore_patterns("MANIFEST.tsv"), dirs_exist_ok=True)
    synthetic_documents(inbox / "synthetic", args.synthetic)
    documents = sum(1 for p in inbox.rglob("*") if p.is_file())

    import dagster as dg

    from quivr_pipelines.core.catalog import repository
    from quivr_pipelines.core.embedding.local import LocalEmbedder
    from quivr_pipelines.core.factory import build_embedder, build_vector_store, open_database
    from quivr_pipelines.runner import ingest_now

    build_embedder(settings)  # load the model before timing, as a long-lived worker would have it
    instance = dg.DagsterInstance.ephemeral()
    started = time.perf_counter()
    summary = ingest_now(settings, kbs=["bench"], instance=instance)
    ingest_seconds = time.perf_counter() - started

    db = open_database(settings)
    rows = repository.get_documents(db, "bench")
    db.close()
    ingested = [key for key, row in rows.items() if row["status"] == "ingested"]
    store = build_vector_store(settings, keep_open=True)  # one open for all the reads
    texts = [p.payload["text"] for key in ingested for p in store.document_points("bench", "bench", key)]
    store.close()
    chunks = len(texts)

    embedder = LocalEmbedder.load() if settings.embedder == "local" else build_embedder(settings)
    started = time.perf_counter()
    for start in range(0, len(texts), settings.embedding_batch_size):
        embedder.embed(texts[start:start + settings.embedding_batch_size])
    embed_seconds = time.perf_counter() - started

    result = {
        "documents": documents,
        "ingested": len(ingested),
        "not_ingested": documents - len(ingested),
        "runs": summary["runs"],
        "chunks": chunks,
        "ingest_seconds": round(ingest_seconds, 1),
        "documents_per_second": round(documents / ingest_seconds, 2),
        "chunks_per_second": round(chunks / ingest_seconds, 2),
        "embedder_only_seconds": round(embed_seconds, 1),
        "embedder_only_chunks_per_second": round(chunks / embed_seconds, 2),
        "end_to_end_vs_embedder_only": round((chunks / ingest_seconds) / (chunks / embed_seconds), 3),
        "embedder": embedder.fingerprint,
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    if not args.keep:
        drop_schema()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
