"""Re-embedding and re-chunking a KB into a new generation, catch-up, swap, rollback, cleanup
(core/reembed.py), on real components: PostgreSQL, qdrant-edge, the local model and the
OpenAI-compatible test server as a second embedder of another dimension."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from types import SimpleNamespace

import pytest

from quivr_pipelines.core import generations, reembed
from quivr_pipelines.core.catalog import repository
from quivr_pipelines.core.catalog.database import Database
from quivr_pipelines.core.catalog.repository import KbConfig
from quivr_pipelines.core.deletion import prune_missing
from quivr_pipelines.core.embedding.local import LocalEmbedder
from quivr_pipelines.core.embedding.registry import EmbedderRegistry
from quivr_pipelines.core.objects import LocalFolderStore
from quivr_pipelines.core.parsing.workers import ParserPool
from quivr_pipelines.core.pipeline import IngestionContext, ingest_documents
from quivr_pipelines.core.vectorstore.embedded import EmbeddedStore
from quivr_pipelines_tests.openai_stub import OpenAIStub

KB = "handbook"
TOPICS = ["vaccines travel in refrigerated containers", "the warehouse opens at six in the morning",
          "invoices are paid within thirty days", "forklift drivers need a licence",
          "the cold room is kept at four degrees", "returns are inspected on arrival",
          "pallets are wrapped before loading", "night shifts rotate every week"]
STUB_MODEL = "stub-embed"


def document(i: int, words: int = 120) -> bytes:
    topic = TOPICS[i % len(TOPICS)]
    body = " ".join(f"{topic} and item {i} sentence {n}." for n in range(words // 8))
    return f"# Procedure {i}\n\n{body}\n\n## Details\n\n{body}".encode()


@pytest.fixture(scope="module")
def stub():
    with OpenAIStub(dimensions=16) as server:
        yield server


@pytest.fixture
def world(tmp_path, postgres_dsn, db_schema, stub):
    db = Database(postgres_dsn, schema=db_schema)
    vectors = EmbeddedStore(tmp_path / "qdrant")
    objects = LocalFolderStore(tmp_path / "inbox")
    local = LocalEmbedder.load()
    settings = SimpleNamespace(embedders=f"openai:{STUB_MODEL}:16@{stub.url}", openai_api_key=None,
                               openai_base_url=None, openai_max_retries=0)
    registry = EmbedderRegistry(settings, default=local)
    defaults = KbConfig(name="", chunk_max_characters=800, chunk_new_after_characters=600,
                        chunk_combine_under_characters=100, chunk_overlap_characters=0)
    with ParserPool(workers=1) as parser:
        ingestion = IngestionContext(store=objects, vectors=vectors, embedder=local, db=db, defaults=defaults,
                                     max_bytes=10 << 20, parser=parser, registry=registry)
        for i in range(10):
            objects.put(KB, f"doc{i:02d}.md", document(i))
        assert all(o.status == "ingested" for o in ingest_documents(ingestion, KB, [f"doc{i:02d}.md" for i in range(10)]))
        ctx = reembed.ReembedContext(vectors=vectors, db=db, registry=registry, defaults=defaults, objects=objects,
                                     parser=parser, actor="test")
        yield SimpleNamespace(db=db, vectors=vectors, objects=objects, ingestion=ingestion, ctx=ctx,
                              registry=registry, stub=stub)
    vectors.close()
    db.close()


STUB = reembed.Target(embedder=f"openai:{STUB_MODEL}:16")


def passed(world, gen):
    generations.update(world.db, KB, gen.generation, gates={name: {"passed": True} for name in reembed.GATES})


def build(world, target=STUB, **kwargs):
    gen = reembed.start_or_resume(world.ctx, KB, target)
    return reembed.build(world.ctx, gen, **kwargs)


def texts(world, collection, key):
    return [p.payload["text"] for p in world.vectors.document_points(collection, KB, key)]


def test_dry_run_reports_chunks_cache_hits_tokens_and_dollars_before_any_work(world):
    points = world.vectors.count(world.vectors.resolve_alias(KB), kb=KB)
    before = len(world.stub.requests)
    plan = reembed.plan(world.ctx, KB, STUB, price_per_million=0.02)
    assert (plan.mode, plan.documents, plan.chunks, plan.cached, plan.to_embed) == ("copy", 10, points, 0, points)
    assert plan.tokens > 0 and plan.dollars == pytest.approx(plan.tokens / 1e6 * 0.02)
    assert plan.serving.generation == 1 and plan.target_fingerprint == f"openai:{STUB_MODEL}:16"
    assert len(world.stub.requests) == before  # nothing embedded
    assert generations.building(world.db, KB) is None  # nothing started


def test_copy_to_another_model_then_swap_serves_it_and_keeps_the_old_one_for_rollback(world):
    old = world.vectors.resolve_alias(KB)
    gen = build(world)
    assert gen.collection == f"kb_{KB}__openai-{STUB_MODEL}-16__g2" and gen.mode == "copy"
    assert gen.chunks_done == gen.chunks_total == world.vectors.count(old, kb=KB)
    assert world.vectors.resolve_alias(KB) == old  # still serving the old one
    with pytest.raises(reembed.ReembedError, match="has not passed its gates"):
        reembed.swap(world.ctx, KB)
    passed(world, gen)
    result = reembed.swap(world.ctx, KB)
    assert world.vectors.resolve_alias(KB) == gen.collection
    assert world.vectors.collection_info(KB).dimensions == 16
    assert result.previous.collection == old
    states = {g.generation: g.state for g in generations.history(world.db, KB)}
    assert states == {1: "retired", 2: "serving"}
    rows = repository.get_documents(world.db, KB)
    assert {r["embedding_model"] for r in rows.values()} == {f"openai:{STUB_MODEL}:16"}
    for key in rows:  # the same chunks, same ids, same texts
        assert texts(world, gen.collection, key) == texts(world, old, key)
    ledger = _ledger(world, gen)
    assert ledger["inputs"] == gen.chunks_embedded and ledger["rows"] >= 1


def _ledger(world, gen):
    with world.db.transaction() as conn:
        rows, inputs = conn.execute("SELECT count(*), coalesce(sum(inputs), 0) FROM usage_ledger WHERE model = %s"
                                    " AND kb = %s", (STUB_MODEL, KB)).fetchone()
    return {"rows": rows, "inputs": inputs}


def test_documents_added_changed_and_deleted_during_the_build_are_right_after_the_swap(world):
    gen = build(world)
    # While it is built (before the swap): one document added, one changed, one deleted.
    world.objects.put(KB, "new.md", document(42))
    world.objects.put(KB, "doc03.md", document(3, words=400))
    (world.objects.root / KB / "doc05.md").unlink()
    ingest_documents(world.ingestion, KB, ["new.md", "doc03.md"])
    repository.count_missing(world.db, KB, ["doc05.md"], [])
    assert prune_missing(world.objects, world.vectors, world.db, KB, 1).deleted == ["doc05.md"]
    assert world.vectors.count(gen.collection, kb=KB, document_key="doc05.md") == 0  # prune reached it
    passed(world, gen)
    result = reembed.swap(world.ctx, KB)
    assert result.caught_up >= 2
    served = world.vectors.resolve_alias(KB)
    old = result.previous.collection
    rows = repository.get_documents(world.db, KB)
    ingested = {k for k, r in rows.items() if r["status"] == "ingested"}
    assert "new.md" in ingested and "doc05.md" not in ingested
    assert world.vectors.chunk_counts(served, KB) == {k: rows[k]["chunk_count"] for k in ingested}
    assert texts(world, served, "doc03.md") == texts(world, old, "doc03.md")
    assert len(texts(world, served, "doc03.md")) > 2


def test_a_killed_build_resumes_at_its_cursor_without_duplicates(world, monkeypatch):
    monkeypatch.setattr(reembed, "PAGE", 4)
    pages = []

    def killed(progress):
        pages.append(progress.done)
        if len(pages) == 2:
            raise KeyboardInterrupt  # as a SIGKILL would, between two pages

    with pytest.raises(KeyboardInterrupt):
        build(world, progress=killed)
    half = generations.building(world.db, KB)
    assert half.chunks_done == 8 and half.cursor not in (None, reembed.DONE)
    embedded_before = len(world.stub.requests)
    gen = build(world)  # the same target: resumed, not restarted
    assert gen.generation == half.generation
    total = world.vectors.count(world.vectors.resolve_alias(KB), kb=KB)
    assert world.vectors.count(gen.collection, kb=KB) == total == gen.chunks_done
    assert gen.chunks_embedded <= total  # the first pages were not embedded twice
    assert len(world.stub.requests) - embedded_before < total  # fewer calls than a restart


def test_another_target_while_one_builds_is_refused_and_cancel_frees_it(world, monkeypatch):
    monkeypatch.setattr(reembed, "PAGE", 4)
    with pytest.raises(KeyboardInterrupt):
        build(world, progress=lambda p: (_ for _ in ()).throw(KeyboardInterrupt))
    other = reembed.Target(chunking={"chunk_max_characters": 300})
    with pytest.raises(reembed.ReembedError, match="already builds generation 2"):
        reembed.start_or_resume(world.ctx, KB, other)
    assert reembed.cancel(world.ctx, KB).state == "failed"
    assert reembed.start_or_resume(world.ctx, KB, other).generation == 3


def test_rechunk_with_the_same_model_then_swap_applies_the_new_sizes(world):
    target = reembed.Target(chunking={"chunk_max_characters": 300, "chunk_new_after_characters": 250})
    gen = build(world, target)
    assert gen.mode == "rechunk" and gen.fingerprint == LocalEmbedder.fingerprint
    assert gen.collection == f"kb_{KB}__local-all-minilm-l6-v2-384__g2"
    old = world.vectors.resolve_alias(KB)
    counts = world.vectors.chunk_counts(gen.collection, KB)
    assert sum(counts.values()) > world.vectors.count(old, kb=KB)  # smaller chunks, more of them
    assert all(len(t) <= 300 for key in counts for t in texts(world, gen.collection, key))
    passed(world, gen)
    reembed.swap(world.ctx, KB)
    config = repository.get_kb(world.db, KB)
    assert (config.chunk_max_characters, config.chunk_new_after_characters) == (300, 250)
    rows = repository.get_documents(world.db, KB)
    assert {k: r["chunk_count"] for k, r in rows.items()} == counts
    # the next ingestion chunks with the KB's new sizes
    world.objects.put(KB, "later.md", document(7))
    ingest_documents(dataclasses.replace(world.ingestion, defaults=world.ctx.defaults), KB, ["later.md"])
    assert all(len(t) <= 300 for t in texts(world, gen.collection, "later.md"))


def test_ingestion_after_a_swap_embeds_with_the_kbs_model_not_the_default(world):
    gen = build(world)
    passed(world, gen)
    reembed.swap(world.ctx, KB)
    world.objects.put(KB, "after.md", document(11))
    (outcome,) = ingest_documents(world.ingestion, KB, ["after.md"])
    assert outcome.status == "ingested" and outcome.model == f"openai:{STUB_MODEL}:16"
    point = world.vectors.document_points(gen.collection, KB, "after.md")[0]
    assert point.payload["embedding_model"] == f"openai:{STUB_MODEL}:16"


def test_rollback_serves_the_previous_generation_with_the_changes_made_since(world):
    old = world.vectors.resolve_alias(KB)
    gen = build(world)
    passed(world, gen)
    reembed.swap(world.ctx, KB)
    world.objects.put(KB, "doc02.md", document(2, words=300))
    ingest_documents(world.ingestion, KB, ["doc02.md"])  # written to the new generation only
    result = reembed.rollback(world.ctx, KB)
    assert world.vectors.resolve_alias(KB) == old and result.serving.generation == 1
    assert texts(world, old, "doc02.md") == texts(world, gen.collection, "doc02.md")  # mirrored back
    rows = repository.get_documents(world.db, KB)
    assert {r["embedding_model"] for r in rows.values()} == {LocalEmbedder.fingerprint}
    assert world.vectors.chunk_counts(old, KB) == {k: r["chunk_count"] for k, r in rows.items()}
    with world.db.transaction() as conn:
        actions = [r[0] for r in conn.execute("SELECT action FROM admin_audit ORDER BY id")]
    assert actions == ["reembed_swap", "reembed_rollback"]


def test_cleanup_drops_generations_past_the_window_and_never_the_serving_one(world):
    old = world.vectors.resolve_alias(KB)
    gen = build(world)
    passed(world, gen)
    reembed.swap(world.ctx, KB)
    assert reembed.cleanup(world.ctx, timedelta(days=7)) == []  # inside the window
    assert [g.collection for g in reembed.cleanup(world.ctx, timedelta(0), dry_run=True)] == [old]
    assert old in world.vectors.list_collections()
    dropped = reembed.cleanup(world.ctx, timedelta(0))
    assert [g.collection for g in dropped] == [old]
    assert old not in world.vectors.list_collections() and gen.collection in world.vectors.list_collections()
    assert generations.get(world.db, KB, 1).state == "deleted"
    with pytest.raises(reembed.ReembedError, match="no retired generation"):
        reembed.rollback(world.ctx, KB)
