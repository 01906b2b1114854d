"""The service's building blocks without HTTP: caches, KB scoping, the token bucket, answers."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from quivr_pipelines.core.llm import EXTRACT_CHARACTERS, NO_PASSAGE_ANSWER, Passage, cost_dollars, extractive_pieces
from quivr_pipelines.service.caches import TTLCache
from quivr_pipelines.service.schemas import Filters
from quivr_pipelines.service.service import scoped_filter


def test_ttl_cache_is_bounded_and_expires():
    cache = TTLCache(max_entries=2, ttl_seconds=0.2)
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.set("c", 3)
    assert (cache.get("b"), cache.get("a"), cache.get("c")) == (None, 1, 3)
    time.sleep(0.25)
    assert cache.get("a") is None and len(cache) == 1
    off = TTLCache(max_entries=0, ttl_seconds=10)
    off.set("a", 1)
    assert off.get("a") is None


def test_scoped_filter_always_forces_the_path_kb():
    after = datetime(2026, 1, 1, tzinfo=UTC)
    flt = scoped_filter("alpha", Filters(document_key_prefix="x/", content_types=["text/plain", "text/plain"],
                                         ingested_after=after))
    assert (flt.kb, flt.document_key_prefix, flt.content_types) == ("alpha", "x/", ("text/plain",))
    assert flt.ingested_after == "2026-01-01T00:00:00+00:00" and flt.ingested_before is None
    assert scoped_filter("beta", None).kb == "beta"
    assert hash(flt)  # usable in the result cache key


def test_token_bucket_refills_and_reports_retry_after(settings_env):
    from quivr_pipelines.core.catalog import api_keys
    from quivr_pipelines.core.factory import open_database

    db = open_database(settings_env)
    try:
        key, raw = api_keys.create_key(db, "bucket", "viewer", rate_limit_per_minute=60, rate_limit_burst=3)
        results = [api_keys.authenticate(db, raw, per_minute=1000, burst=1000) for _ in range(4)]
        assert [r.allowed for r in results] == [True, True, True, False]
        assert results[-1].retry_after_seconds == 1  # 60 per minute: one token per second
        with db.transaction() as conn:  # two seconds later (moved back in time instead of sleeping)
            conn.execute("UPDATE rate_limit_buckets SET refreshed_at = refreshed_at - interval '2 seconds'")
        assert [api_keys.authenticate(db, raw, 1000, 1000).allowed for _ in range(3)] == [True, True, False]

        unlimited, raw2 = api_keys.create_key(db, "free", "admin")
        assert all(api_keys.authenticate(db, raw2, per_minute=0, burst=1).allowed for _ in range(5))
        assert api_keys.authenticate(db, "qvr_nope", 10, 10) is None

        old, raw3 = api_keys.create_key(db, "old", "viewer",
                                        expires_at=datetime.now(UTC) - timedelta(seconds=1))
        assert api_keys.authenticate(db, raw3, 10, 10).state == "expired"
        assert api_keys.revoke_key(db, key.id) and not api_keys.revoke_key(db, key.id)
        assert api_keys.authenticate(db, raw, 10, 10).state == "revoked"
    finally:
        db.close()


def test_extractive_answer_cites_and_trims():
    long = "word " * 400
    passages = [Passage(1, "Short first passage.", "a.txt", None, None, 0.9),
                Passage(2, long, "b.txt", 3, None, 0.5)]
    pieces = extractive_pieces(passages)
    assert pieces[0] == "Short first passage. [1]"
    assert pieces[1].endswith("… [2]") and len(pieces[1]) < EXTRACT_CHARACTERS + 10
    assert extractive_pieces([]) == [NO_PASSAGE_ANSWER]
    assert cost_dollars(1_000_000, 500_000, 0.15, 0.6) == 0.45
