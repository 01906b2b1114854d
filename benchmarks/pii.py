"""Cost of PII handling per document: `off` (the baseline, measured in the same run) vs `detect`
vs `mask`, through the real pipeline (`core.pipeline.ingest_documents`: parse, chunk, PII step,
embed, write, record) on the embedded default.

    python benchmarks/pii.py [--max-bytes N] [--limit N]

The sample is every document of ../shared/data/docs up to --max-bytes (default 50 KB, which keeps
the run to a few minutes on 2 cores; the books and other large files would dominate it), minus
the non-English folder. Each mode
ingests the same sample into its own KB, with the embedding cache emptied first (detect embeds
the same texts as off and would otherwise get them free), one parser pool for all of them, and
`off` runs first and last so drift from the machine's load shows (after a warm-up run that is not
counted: the parser workers' first documents load unstructured's models). Prints, per mode: wall seconds,
seconds per ingested document, the ratio to the baseline, the PII step's own seconds per document
(from the catalog's `pii_seconds`) and per 1,000 characters, and the entities found.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import drop_schema

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT.parent / "shared" / "data" / "docs"
MODES = ("off", "off", "detect", "mask", "off")  # the first run warms up (parser workers, models)


def sample(max_bytes: int, limit: int | None) -> list[str]:
    with (DOCS / "MANIFEST.tsv").open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    keys = sorted(r["file"] for r in rows if int(r["size_bytes"]) <= max_bytes
                  and not r["file"].startswith(("language-docs/", "img/")))
    return keys[:limit] if limit else keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-bytes", type=int, default=50_000)
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="quivr-bench-pii-"))
    os.environ["QUIVR_DATA_DIR"] = str(work / "data")
    os.environ.setdefault("QUIVR_DATABASE_SCHEMA", f"bench_pii_{int(time.time())}")
    os.chdir(work)
    sys.path.insert(0, str(ROOT))
    from quivr_pipelines.core import pii
    from quivr_pipelines.core.catalog import repository
    from quivr_pipelines.core.factory import (
        build_embedder,
        build_object_store,
        build_vector_store,
        kb_defaults,
        open_database,
    )
    from quivr_pipelines.core.parsing.workers import ParserPool
    from quivr_pipelines.core.pipeline import IngestionContext, ingest_documents
    from quivr_pipelines.settings import get_settings

    settings = get_settings()
    keys = sample(args.max_bytes, args.limit)
    store = build_object_store(settings)
    for run, mode in enumerate(MODES):
        for key in keys:
            store.put(f"bench-{run}-{mode}", key, (DOCS / key).read_bytes())
    db = open_database(settings)
    vectors = build_vector_store(settings, keep_open=True)
    embedder = build_embedder(settings)
    embedder.embed(["warm up"])
    started = time.perf_counter()
    pii.warm_up()
    print(f"sample: {len(keys)} documents of {DOCS} (<= {args.max_bytes} bytes); "
          f"PII engines loaded in {time.perf_counter() - started:.2f} s; load average {os.getloadavg()[0]:.2f}")
    results = []
    try:
        with ParserPool() as pool:
            ctx = IngestionContext(store=store, vectors=vectors, embedder=embedder, db=db,
                                   defaults=kb_defaults(settings), max_bytes=settings.max_upload_bytes,
                                   batch_size=settings.embedding_batch_size, parser=pool)
            for run, mode in enumerate(MODES):
                kb = f"bench-{run}-{mode}"
                repository.ensure_kb(db, kb, ctx.defaults)
                repository.configure_kb(db, kb, pii=mode)
                with db.transaction() as conn:
                    conn.execute("DELETE FROM embedding_cache")
                load = os.getloadavg()[0]
                started = time.perf_counter()
                outcomes = ingest_documents(ctx, kb, keys, force=True)
                wall = time.perf_counter() - started
                print(f"  {'warm-up ' if run == 0 else ''}{mode}: {wall:.1f} s", flush=True)
                if run:
                    results.append((mode, kb, wall, outcomes, load))
        base_walls = [wall for mode, _, wall, _, _ in results if mode == "off"]
        baseline = statistics.mean(base_walls)
        print(f"baseline (off, first and last run): {base_walls[0]:.2f} s and {base_walls[1]:.2f} s, "
              f"mean {baseline:.2f} s")
        base_per_doc = baseline / max(sum(1 for o in results[0][3] if o.status == "ingested"), 1)
        print("| mode | documents ingested | chunks | wall s | s/document | ratio to off | PII step s/document "
              "(mean / max) | PII step / off s per document | PII step ms per 1,000 chars | entities found | load avg |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for mode, kb, wall, outcomes, load in results:
            ingested = [o for o in outcomes if o.status == "ingested"]
            rows = repository.get_documents(db, kb)
            pii_seconds = [rows[o.object_key]["pii_seconds"] or 0.0 for o in ingested]
            characters = sum(len(p.payload["text"]) for o in ingested
                             for p in vectors.document_points(o.collection, kb, o.object_key))
            found: Counter[str] = Counter()
            for o in ingested:
                found.update(rows[o.object_key]["pii_entities"] or {})
            per_k = 1000 * sum(pii_seconds) / max(characters, 1) * 1000
            print(f"| {mode} | {len(ingested)} | {sum(o.chunks for o in ingested)} | {wall:.2f} | "
                  f"{wall / max(len(ingested), 1):.3f} | {wall / baseline:.2f} | "
                  f"{statistics.mean(pii_seconds) if pii_seconds else 0:.3f} / {max(pii_seconds, default=0):.3f} | "
                  f"{(statistics.mean(pii_seconds) if pii_seconds else 0) / base_per_doc:.2f} | "
                  f"{per_k:.2f} | {dict(found.most_common()) or '-'} | {load:.2f} |")
    finally:
        vectors.close()
        db.close()
        drop_schema()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
