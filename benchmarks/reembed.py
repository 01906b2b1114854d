"""Re-embedding throughput against the embedder alone, and query latency before, during and
around the swap (issue 11).

    .venv/bin/python benchmarks/reembed.py [--documents 300] [--queries 40]

A KB of NFCorpus abstracts (../shared/data/retrieval/nfcorpus, one markdown file each) is
ingested with the local model; then a copy build to the same model with the contextual headers
switched off (`Target(context_headers=False)`: every chunk gets a new text, so every chunk is
really embedded; the embedding cache is emptied first), gated and swapped. Printed:

- throughput: chunks/s of the build (scroll, cache lookups, embedding, ledger, upsert, cursor)
  against `embedder.embed` alone on the same texts in batches of the same size, measured in the
  same run, and their ratio (target >= 0.9);
- query latency of the same hybrid queries (store.search with precomputed query vectors, as the
  query service does on a query-vector cache hit; a thread of this process, sharing the store)
  before the build, during it and during the swap (catch-up, lock, alias), p50 / p95, errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "retrieval" / "nfcorpus"
KB = "nfbench"


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=300)
    parser.add_argument("--queries", type=int, default=40)
    args = parser.parse_args()

    from quivr_pipelines.core import reembed, sparse
    from quivr_pipelines.core.catalog.database import Database
    from quivr_pipelines.core.catalog.repository import KbConfig
    from quivr_pipelines.core.embedding.local import LocalEmbedder
    from quivr_pipelines.core.embedding.registry import EmbedderRegistry
    from quivr_pipelines.core.objects import LocalFolderStore
    from quivr_pipelines.core.parsing.workers import ParserPool
    from quivr_pipelines.core.pipeline import IngestionContext, ingest_in_batches
    from quivr_pipelines.core.vectorstore.base import SearchFilter
    from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore
    from quivr_pipelines.settings import Settings

    rows = [json.loads(line) for line in (DATA / "corpus.jsonl").open()][:args.documents]
    queries = [json.loads(line)["text"] for line in (DATA / "queries.jsonl").open()][:args.queries]
    work = Path(tempfile.mkdtemp(prefix="reembed-bench-"))
    dsn = os.environ.get("QUIVR_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    db = Database(dsn, schema=schema)
    store = EmbeddedStore(work / "qdrant", keep_open=True)
    objects = LocalFolderStore(work / "inbox")
    embedder = LocalEmbedder.load()
    defaults = KbConfig(name="", chunk_max_characters=1500, chunk_new_after_characters=1200,
                        chunk_combine_under_characters=200, chunk_overlap_characters=0)
    try:
        for row in rows:
            objects.put(KB, f"{row['_id']}.md", f"# {row.get('title') or row['_id']}\n\n{row['text']}\n".encode())
        keys = sorted(f"{row['_id']}.md" for row in rows)
        started = time.perf_counter()
        with ParserPool() as pool:
            ctx = IngestionContext(store=objects, vectors=store, embedder=embedder, db=db, defaults=defaults,
                                   max_bytes=10 << 20, parser=pool, context_headers=True)
            for _ in ingest_in_batches(ctx, KB, keys, 32):
                pass
        chunks = store.count(store.resolve_alias(KB), kb=KB)
        print(f"ingested {len(keys)} documents, {chunks} chunks in {time.perf_counter() - started:.1f} s")

        settings = Settings(_env_file=None)
        rctx = reembed.ReembedContext(vectors=store, db=db, registry=EmbedderRegistry(settings, default=embedder),
                                      defaults=defaults, objects=objects, batch_size=settings.embedding_batch_size,
                                      context_headers=True, actor="benchmark")
        vectors = [v.tolist() for v in embedder.embed(queries).vectors]
        sparse_queries = [sparse.query_vector(q) for q in queries]
        latencies: list[tuple[float, float]] = []
        errors = [0]
        stop = threading.Event()

        def query_loop():
            i = 0
            while not stop.is_set():
                n = i % len(queries)
                t = time.perf_counter()
                try:
                    store.search(KB, vectors[n], sparse_queries[n], 10, SearchFilter(kb=KB), "hybrid")
                except Exception:  # noqa: BLE001 - counted
                    errors[0] += 1
                latencies.append((time.monotonic(), (time.perf_counter() - t) * 1000))
                i += 1
                time.sleep(0.005)

        def window(start, end):
            return [ms for at, ms in latencies if start <= at < end]

        thread = threading.Thread(target=query_loop, daemon=True)
        thread.start()
        time.sleep(5)
        build_start = time.monotonic()
        with db.transaction() as conn:
            conn.execute("DELETE FROM embedding_cache")
        gen = reembed.start_or_resume(rctx, KB, reembed.Target(context_headers=False))
        gen = reembed.build(rctx, gen)
        build_end = time.monotonic()
        for result in reembed.run_gates(rctx, gen):
            print(f"gate {result.name}: {'pass' if result.passed else 'FAIL'} - {result.description}")
        swap_start = time.monotonic()
        swapped = reembed.swap(rctx, KB)
        swap_end = time.monotonic()
        time.sleep(1)
        stop.set()
        thread.join()

        texts = []
        offset = None
        while True:
            hits, offset = store.scroll_points(swapped.serving.collection, KB, offset, 1000)
            texts += [reembed.indexed_text(h.payload, False) for h in hits]
            if offset is None:
                break
        t = time.perf_counter()
        for i in range(0, len(texts), rctx.batch_size):
            embedder.embed(texts[i:i + rctx.batch_size])
        alone = len(texts) / (time.perf_counter() - t)
        build_rate = gen.chunks_done / gen.build_seconds
        before = window(0, build_start)
        during = window(build_start, build_end)
        swapping = window(swap_start, swap_end + 0.5)
        print(f"\nre-embedding: {gen.chunks_done} chunks ({gen.chunks_embedded} embedded, {gen.chunks_cached} cached) "
              f"in {gen.build_seconds:.1f} s = {build_rate:.1f} chunks/s; embedder alone on the same "
              f"{len(texts)} texts: {alone:.1f} chunks/s; ratio {build_rate / alone:.2f}")
        print(f"swap: {swapped.seconds:.2f} s, {swapped.caught_up} documents caught up")
        print("\n| queries | n | p50 ms | p95 ms |\n|---|---|---|---|")
        for name, values in (("before", before), ("during the build", during), ("during the swap", swapping)):
            print(f"| {name} | {len(values)} | {percentile(values, 0.5):.2f} | {percentile(values, 0.95):.2f} |")
        print(f"\nerrors: {errors[0]}; p95 during the build / before: "
              f"{percentile(during, 0.95) / percentile(before, 0.95):.2f}")
        print(f"load: {os.getloadavg()}")
    finally:
        store.close()
        db.close()
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    main()
