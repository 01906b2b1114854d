"""Query latency over a 100k-chunk KB on the embedded default. Figures are printed, never asserted.

    python benchmarks/query.py [--chunks 100000] [--real 3000] [--keep DIR] [--per-level 300]
                               [--optimize] [--no-service]

The KB (`bench`, one qdrant-edge shard behind its alias, written through `EmbeddedStore`):
  * real chunks: every XQuAD passage (240) plus NFCorpus abstracts (3,395 docs) cut at word
    boundaries into paragraph-sized chunks (<= 800 characters), up to `--real` chunks in all,
    embedded for real by the local MiniLM embedder (the vectors are cached in DIR/real.npz);
  * filler up to `--chunks`: each filler point copies a real chunk's vector plus Gaussian noise
    (normalise(v + 0.5 * g / sqrt(384)), cosine ~0.89 to its source), with a text derived from the
    source (its words rotated, ~15 % of them replaced by words of another real chunk) and the BM25
    sparse vector of that derived text (`core/sparse.py`);
  * payloads as the pipeline writes them: kb, document_key (10 chunks per document), version,
    sha256, chunk_index, text, page_number, element_categories, section_title, content_type
    (pdf / docx / html / text), source_uri, ingested_at (spread over 2026), embedding_model.
`--keep DIR` keeps (and reuses) the built KB; `--optimize` builds the HNSW index first
(`EmbeddedStore.optimize`, minutes at 100k) so the optimized collection is measured instead of
brute force. The output says which one was measured.

Measured in one run, same queries (XQuAD questions + NFCorpus queries, hybrid, top_k 5):
  1. raw Qdrant: `EmbeddedStore.search` in-process with precomputed query vectors, at 1, 4 and 16
     threads (the store serialises its calls inside a process);
  2. the query service (`quivr-pipelines serve` on a loopback port, API key, access log) driven by
     the load tester (`quivr_pipelines/loadtest.py`, asyncio + httpx, in this process) at 1, 4 and
     16 concurrent clients. Headline figures use distinct queries never sent before (cache misses:
     every level gets its own slice of queries); a separate pass repeats queries already answered
     (query-embedding and result caches warm).
The ratio service/raw shows the overhead of HTTP + auth + query embedding + logging. Both client
and server share the 2 cores, as a load tester on the same machine does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "retrieval"
KB = "bench"
CHUNKS_PER_DOCUMENT = 10
NOISE = 0.5
RECIPE = ("real chunks: all XQuAD passages + NFCorpus abstracts cut into <= 800-character chunks, embedded by "
          "the local MiniLM; filler: noisy copies of their vectors (normalise(v + 0.5 g / sqrt(384))), texts "
          "derived from theirs (words rotated, ~15 % replaced) with their own BM25 sparse vectors; pipeline "
          "payloads, 10 chunks per document; written through EmbeddedStore.replace_documents")
CONTENT_TYPES = ("application/pdf", "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                 "text/html", "text/plain")


# -- the KB ------------------------------------------------------------------------------------
def _split(text: str, limit: int = 800) -> list[str]:
    pieces, current = [], []
    for word in text.split():
        if current and sum(len(w) + 1 for w in current) + len(word) > limit:
            pieces.append(" ".join(current))
            current = []
        current.append(word)
    if current:
        pieces.append(" ".join(current))
    return pieces


def real_texts(limit: int) -> list[tuple[str, str]]:
    """(source id, text): all XQuAD passages, then NFCorpus chunks up to `limit` in all."""
    texts = [(f"xquad/{row['_id']}", row["text"])
             for row in map(json.loads, (SHARED / "xquad_en/passages.jsonl").open())]
    for row in map(json.loads, (SHARED / "nfcorpus/corpus.jsonl").open()):
        for i, piece in enumerate(_split(f"{row.get('title', '')} {row['text']}".strip())):
            if len(piece) >= 200:
                texts.append((f"nfcorpus/{row['_id']}#{i}", piece))
    return texts[:limit]


def queries() -> list[str]:
    """Distinct questions: XQuAD (1,190) then NFCorpus (323), deterministic order."""
    seen, out = set(), []
    rows = [json.loads(line)["question"] for line in (SHARED / "xquad_en/qa.jsonl").open()]
    rows += [json.loads(line)["text"] for line in (SHARED / "nfcorpus/queries.jsonl").open()]
    for q in rows:
        if q not in seen:
            seen.add(q)
            out.append(q)
    random.Random(7).shuffle(out)
    return out


def _derived(words: list[str], other: list[str], rng: random.Random) -> str:
    shift = rng.randrange(len(words))
    out = words[shift:] + words[:shift]
    for i in range(len(out)):
        if rng.random() < 0.15:
            out[i] = other[rng.randrange(len(other))]
    return " ".join(out)


def sparse_probe() -> list[int]:
    """Term ids of a fixed text: a KB built by another `core/sparse.py` is rebuilt, not measured."""
    from quivr_pipelines.core import sparse

    return sparse.query_vector("benchmark probe: statins, breast cancer and the Super Bowl").indices


def build_kb(data_dir: Path, chunks: int, real: int) -> dict:
    from quivr_pipelines.core import sparse
    from quivr_pipelines.core.embedding.local import LocalEmbedder
    from quivr_pipelines.core.keys import point_id
    from quivr_pipelines.core.pipeline import collection_name
    from quivr_pipelines.core.vectorstore.base import PointRecord
    from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore

    embedder = LocalEmbedder.load()
    texts = real_texts(real)
    data_dir.mkdir(parents=True, exist_ok=True)
    cache = data_dir / "real.npz"
    started = time.perf_counter()
    if cache.exists() and len(np.load(cache)["vectors"]) == len(texts):
        vectors = np.load(cache)["vectors"]
        embed_seconds = None
    else:
        parts = []
        for start in range(0, len(texts), 256):
            parts.append(embedder.embed([t for _, t in texts[start:start + 256]]).vectors)
            print(f"  embedded {start + len(parts[-1])}/{len(texts)} real chunks "
                  f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        vectors = np.concatenate(parts)
        np.savez(cache, vectors=vectors)
        embed_seconds = time.perf_counter() - started

    store = EmbeddedStore(data_dir / "qdrant")
    collection = collection_name(KB, embedder.fingerprint)
    store.ensure_collection(collection, embedder.dimensions, embedder.fingerprint)
    store.set_alias(KB, collection)
    rng, nrng = random.Random(42), np.random.default_rng(42)
    words = [t.split() for _, t in texts]
    write_started = time.perf_counter()
    batch: list[tuple[str, str, list[PointRecord]]] = []
    for doc in range((chunks + CHUNKS_PER_DOCUMENT - 1) // CHUNKS_PER_DOCUMENT):
        key = f"library/{doc // 1000:03d}/doc-{doc:06d}.{('pdf', 'docx', 'html', 'txt')[doc % 4]}"
        ingested_at = f"2026-{1 + doc % 11:02d}-{1 + doc % 28:02d}T{doc % 24:02d}:00:00+00:00"
        points = []
        for index in range(min(CHUNKS_PER_DOCUMENT, chunks - doc * CHUNKS_PER_DOCUMENT)):
            n = doc * CHUNKS_PER_DOCUMENT + index
            source = n % len(texts)
            if n < len(texts):
                vector, text = vectors[source], texts[source][1]
            else:
                noisy = vectors[source] + NOISE * nrng.standard_normal(embedder.dimensions) / np.sqrt(embedder.dimensions)
                vector = noisy / np.linalg.norm(noisy)
                text = _derived(words[source], words[rng.randrange(len(words))], rng)
            points.append(PointRecord(id=point_id(KB, key, index), dense=vector.astype(np.float32).tolist(),
                                      sparse=sparse.document_vector(text), payload={
                "kb": KB, "document_key": key, "version": f"v{doc}",
                "sha256": hashlib.sha256(key.encode()).hexdigest(), "chunk_index": index, "text": text,
                "page_number": 1 + index // 3 if doc % 4 in (0, 1) else None,
                "element_categories": ["NarrativeText"], "section_title": texts[source][0],
                "content_type": CONTENT_TYPES[doc % 4], "source_uri": f"file:///bench/{KB}/{key}",
                "ingested_at": ingested_at, "embedding_model": embedder.fingerprint}))
        batch.append((KB, key, points))
        if len(batch) == 200:
            store.replace_documents(collection, batch)
            batch = []
            done = (doc + 1) * CHUNKS_PER_DOCUMENT
            if done % 10_000 == 0:
                print(f"  wrote {done}/{chunks} points ({time.perf_counter() - write_started:.0f} s)",
                      file=sys.stderr, flush=True)
    if batch:
        store.replace_documents(collection, batch)
    count = store.count(KB)
    store.close()
    info = {"chunks": count, "real_chunks": len(texts), "filler_chunks": count - len(texts),
            "real_embedding_seconds": round(embed_seconds, 1) if embed_seconds else "cached",
            "write_seconds": round(time.perf_counter() - write_started, 1), "collection": collection,
            "optimized": False, "sparse_probe": sparse_probe()}
    (data_dir / "built.json").write_text(json.dumps(info, indent=1))
    return info


# -- measurements ------------------------------------------------------------------------------
def _pct(values: list[float]) -> dict:
    from quivr_pipelines.loadtest import percentile

    values = sorted(values)
    return {"p50": round(percentile(values, 50), 2), "p95": round(percentile(values, 95), 2),
            "p99": round(percentile(values, 99), 2), "max": round(values[-1], 2),
            "mean": round(statistics.fmean(values), 2)}


def measure_raw(data_dir: Path, slices: dict[int, list[str]], warmup: list[str]) -> dict:
    """In-process: query embedding alone, then `EmbeddedStore.search` with precomputed vectors."""
    from quivr_pipelines.core import sparse
    from quivr_pipelines.core.embedding.local import LocalEmbedder
    from quivr_pipelines.core.vectorstore.base import SearchFilter
    from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore

    embedder = LocalEmbedder.load()
    everything = warmup + [q for level in sorted(slices) for q in slices[level]]
    vectors, embed_ms = {}, []
    for q in everything:
        started = time.perf_counter()
        vectors[q] = embedder.embed([q]).vectors[0].tolist()
        embed_ms.append((time.perf_counter() - started) * 1000)
    store = EmbeddedStore(data_dir / "qdrant", keep_open=True)
    flt = SearchFilter(kb=KB)

    def one(q: str) -> float:
        started = time.perf_counter()
        hits = store.search(KB, vectors[q], sparse.query_vector(q), 5, flt, "hybrid")
        assert hits, q
        return (time.perf_counter() - started) * 1000

    try:
        for q in warmup:
            one(q)
        info_ms = []  # the service reads the collection's info (approximate point count) on every request
        for _ in range(100):
            started = time.perf_counter()
            store.collection_info(KB, exact=False)  # as the service reads it
            info_ms.append((time.perf_counter() - started) * 1000)
        levels = {}
        for level, qs in sorted(slices.items()):
            with ThreadPoolExecutor(level) as pool:
                started = time.perf_counter()
                times = list(pool.map(one, qs))
                wall = time.perf_counter() - started
            levels[level] = {"queries": len(qs), **_pct(times), "rps": round(len(qs) / wall, 1)}
    finally:
        store.close()
    return {"query_embedding_ms": _pct(embed_ms[len(warmup):]), "collection_info_ms": _pct(info_ms),
            "search_ms_by_concurrency": levels}


def _database_url() -> str:
    if os.environ.get("QUIVR_DATABASE_URL"):
        return os.environ["QUIVR_DATABASE_URL"]
    return "postgresql://postgres@127.0.0.1:5432/postgres"


def measure_service(data_dir: Path, slices: dict[int, list[str]], warmup: list[str]) -> dict:
    import socket
    import subprocess

    import httpx

    from quivr_pipelines import loadtest
    from quivr_pipelines.core.catalog import api_keys
    from quivr_pipelines.core.factory import open_database
    from quivr_pipelines.settings import Settings

    schema = f"bench_query_{int(time.time())}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUIVR_")}
    env.update(QUIVR_DATA_DIR=str(data_dir), QUIVR_DATABASE_URL=_database_url(), QUIVR_DATABASE_SCHEMA=schema,
               QUIVR_RATE_LIMIT_PER_MINUTE="0", DO_NOT_TRACK="1")
    settings = Settings(data_dir=data_dir, database_url=env["QUIVR_DATABASE_URL"], database_schema=schema)
    db = open_database(settings)
    try:
        _, key = api_keys.create_key(db, "query-benchmark", rate_limit_per_minute=0)
    finally:
        db.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (data_dir / "service.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "quivr_pipelines.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=data_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the service exited; see {data_dir / 'service.log'}")
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not become ready")
            time.sleep(0.3)

        def run(level: int, qs: list[str]) -> dict:
            report = loadtest.run(loadtest.LoadTestConfig(
                url=url, kb=KB, api_key=key, scenario="steady", concurrency=level, requests=len(qs),
                duration=3600, timeout=120, queries=qs))
            if report["failures"]:
                raise RuntimeError(f"failures at concurrency {level}: {report['failures_by_status']}")
            lat = report["latency_ms"]
            took = report["search_server_took_ms"]
            return {"queries": report["total"], "p50": lat["p50"], "p95": lat["p95"], "p99": lat["p99"],
                    "max": lat["max"], "mean": lat["mean"], "rps": report["rps"],
                    "server_took_ms_p50": took.get("p50"), "server_took_ms_p95": took.get("p95"),
                    "result_cache_hits": report["search_cached"]}

        run(1, warmup)  # opens the shard, loads the model
        distinct = {level: run(level, qs) for level, qs in sorted(slices.items())}
        cached = {level: run(level, qs) for level, qs in sorted(slices.items())}  # the same queries again
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        import psycopg

        with psycopg.connect(env["QUIVR_DATABASE_URL"], autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return {"distinct_queries_by_concurrency": distinct, "repeated_queries_by_concurrency": cached}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--real", type=int, default=3_000, help="chunks embedded for real")
    parser.add_argument("--keep", type=Path, help="build the KB here (or reuse it) and keep it")
    parser.add_argument("--per-level", type=int, default=400, help="distinct queries per concurrency level")
    parser.add_argument("--levels", default="1,4,16")
    parser.add_argument("--optimize", action="store_true", help="build the HNSW index before measuring")
    parser.add_argument("--no-service", action="store_true", help="raw Qdrant figures only")
    args = parser.parse_args()
    os.environ.setdefault("DO_NOT_TRACK", "1")
    data_dir = (args.keep or Path(tempfile.mkdtemp(prefix="quivr-query-bench-"))).resolve()
    try:
        built = data_dir / "built.json"
        info = json.loads(built.read_text()) if built.exists() else None
        if info is None or info["chunks"] != args.chunks or info.get("sparse_probe") != sparse_probe():
            if info is not None:
                shutil.rmtree(data_dir / "qdrant", ignore_errors=True)
            print(f"building a {args.chunks}-chunk KB in {data_dir} ...", file=sys.stderr, flush=True)
            built.unlink(missing_ok=True)
            info = build_kb(data_dir, args.chunks, args.real)
        if args.optimize and not info.get("optimized"):
            from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore

            print(f"building the HNSW index (optimize) from {time.strftime('%H:%M:%S')} ...",
                  file=sys.stderr, flush=True)
            store = EmbeddedStore(data_dir / "qdrant")
            started = time.perf_counter()
            store.optimize(KB)
            store.close()
            info.update(optimized=True, optimize_seconds=round(time.perf_counter() - started, 1))
            built.write_text(json.dumps(info, indent=1))
            print(f"optimized in {info['optimize_seconds']} s; measuring", file=sys.stderr, flush=True)
        levels = [int(x) for x in args.levels.split(",")]
        qs = queries()
        warmup, rest = qs[:30], qs[30:]
        if len(rest) < args.per_level * len(levels):
            raise SystemExit(f"only {len(rest)} distinct queries for {len(levels)} levels of {args.per_level}")
        slices = {level: rest[i * args.per_level:(i + 1) * args.per_level] for i, level in enumerate(levels)}
        load_before = os.getloadavg()
        result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cores": os.cpu_count(),
                  "kb": {**info, "built_as": RECIPE, "index": "HNSW (optimized)" if info.get("optimized") else "brute force (not optimized)"},
                  "query": "hybrid (RRF of dense + sparse), top_k 5, filter kb", "raw_qdrant": measure_raw(data_dir, slices, warmup)}
        if not args.no_service:
            service = measure_service(data_dir, slices, warmup)
            result["service"] = service
            raw = result["raw_qdrant"]["search_ms_by_concurrency"]
            result["service_over_raw"] = {
                level: {"p50_ratio": round(row["p50"] / raw[level]["p50"], 2),
                        "p95_ratio": round(row["p95"] / raw[level]["p95"], 2),
                        "per_request_cost_ratio": round(raw[level]["rps"] / row["rps"], 2)}
                for level, row in service["distinct_queries_by_concurrency"].items()}
        result["load_average_before_after"] = [round(x, 2) for x in load_before[:1] + os.getloadavg()[:1]]
        print(json.dumps(result, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
