"""Every case of the fidelity corpus (`quivr_pipelines_tests/fidelity`) is ingested through the
real pipeline into one KB; each sentence must be in its document's chunks and found by sparse
(BM25) search, the weakest of the modes for garbled text: a ligature, a NUL byte or a letter-
spaced word makes the sentence's terms miss."""

import pytest

from quivr_pipelines.core import retrieval
from quivr_pipelines.core.factory import build_embedder, build_vector_store
from quivr_pipelines.settings import get_settings
from quivr_pipelines_tests.fidelity import all_cases
from quivr_pipelines_tests.helpers import all_points, catalog_rows, ingest, normalise

KB = "fidelity"
CASES = all_cases()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, postgres_dsn):
    """One ingestion of every case (module scope: the corpus is ingested once)."""
    import os
    import uuid

    import psycopg

    saved = {k: v for k, v in os.environ.items() if k.startswith("QUIVR_")}
    for key in saved:
        if key != "QUIVR_TEST_DATABASE_URL":
            del os.environ[key]
    root = tmp_path_factory.mktemp("fidelity")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    os.environ.update(QUIVR_DATA_DIR=str(root / "data"), QUIVR_DATABASE_URL=postgres_dsn,
                      QUIVR_DATABASE_SCHEMA=schema)
    settings = get_settings()
    folder = settings.inbox_dir / KB
    folder.mkdir(parents=True)
    for case in CASES:
        (folder / case.name).write_bytes(case.build())
    summary, _ = ingest(kbs=[KB])
    try:
        yield summary, catalog_rows(KB), all_points(KB)
    finally:
        for key in [k for k in os.environ if k.startswith("QUIVR_")]:
            del os.environ[key]
        os.environ.update(saved)
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_sentence_survives_ingestion_and_is_found_by_sparse_search(corpus, case):
    summary, rows, points = corpus
    assert summary["runs_failed"] == 0
    row = rows[case.name]
    assert row["status"] == case.status, (f"{case.name}: {row['status']} {row['error_type']}"
                                          f" {row['failure_reason']} ({case.defect})")
    if case.status != "ingested":
        return
    texts = [normalise(p.payload["text"]) for p in points[case.name]]
    assert any(normalise(case.sentence) in t for t in texts), (
        f"{case.name}: no chunk holds the sentence ({case.defect}); chunks: {texts[:3]}")
    settings = get_settings()
    store = build_vector_store(settings)
    try:
        hits = retrieval.search(store, build_embedder(settings), KB, case.sentence, top_k=3, mode="sparse")
    finally:
        store.close()
    assert hits and hits[0].payload["document_key"] == case.name, (
        f"{case.name}: sparse search for its sentence ranks {[h.payload['document_key'] for h in hits]}"
        f" ({case.defect})")
