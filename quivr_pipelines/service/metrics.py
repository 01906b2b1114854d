"""Prometheus metrics of the query service.

One registry per app (tests build several apps in one process). With several uvicorn workers
`quivr-pipelines serve` sets PROMETHEUS_MULTIPROC_DIR before the workers start: every worker
then writes its values to files there and `/metrics` aggregates all workers
(prometheus_client's multiprocess mode; the gauge sums live workers).
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.queries = Counter("quivr_queries", "API requests by action and HTTP status",
                               ["action", "status"], registry=r)
        self.query_duration = Histogram("quivr_query_duration_seconds", "Whole request latency",
                                        ["action"], buckets=LATENCY_BUCKETS, registry=r)
        self.retrieval_duration = Histogram("quivr_retrieval_duration_seconds",
                                            "Query embedding + vector search (cache misses)",
                                            ["mode"], buckets=LATENCY_BUCKETS, registry=r)
        self.generation_duration = Histogram("quivr_generation_duration_seconds", "LLM answer generation",
                                             ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.results_count = Histogram("quivr_query_results_count", "Chunks returned per query",
                                       buckets=(0, 1, 2, 3, 5, 10, 20, 50), registry=r)
        self.active_connections = Gauge("quivr_active_connections", "HTTP requests in flight",
                                        registry=r, multiprocess_mode="livesum")
        self.llm_tokens = Counter("quivr_llm_tokens", "LLM tokens by model and kind (prompt/completion)",
                                  ["model", "kind"], registry=r)
        self.llm_cost = Counter("quivr_llm_cost_dollars", "LLM cost in dollars (QUIVR_LLM_PRICE_*)",
                                ["model"], registry=r)
        self.embedding_tokens = Counter("quivr_embedding_tokens", "Query embedding tokens",
                                        ["model"], registry=r)
        self.cache = Counter("quivr_query_cache", "Cache lookups by cache and result",
                             ["cache", "result"], registry=r)
        # The audit/usage batch writer (service/writer.py): a growing backlog or any refused row
        # is worth an alert; the log says which row and why.
        self.audit_backlog = Gauge("quivr_audit_backlog_rows", "Audit/usage rows queued, not yet written",
                                   registry=r, multiprocess_mode="livesum")
        self.audit_written = Counter("quivr_audit_rows_written", "Audit/usage rows written, by table",
                                     ["table"], registry=r)
        self.audit_refused = Counter("quivr_audit_rows_refused",
                                     "Audit/usage rows the database refused, isolated into audit_poison",
                                     ["table"], registry=r)
        self.audit_dropped = Counter("quivr_audit_rows_dropped",
                                     "Audit/usage rows lost (backlog over its bound, or unrecordable)", registry=r)
        self.audit_flush_failures = Counter("quivr_audit_flush_failures",
                                            "Writer flushes that failed and are retried (database unreachable)",
                                            registry=r)

    def render(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
