"""`indexed_documents`: each KB's documents, parsed, chunked, embedded and written to Qdrant.

How the UI tells the truth about every document, at any scale:

- **Partitions are KBs, not documents.** One dynamic partition per KB keeps the partition count
  bounded by the number of KBs (documents can number millions). A run ingests a list of one KB's
  documents (`IngestConfig.documents`, run config, visible in the launchpad) or, launched from
  the UI with no list, every new, changed or retryable document of the KB.
- **The catalog is the record of each document** (status, error type, reason, figures); every
  run ends by reading the KB's counts back from it, so what the UI shows is the KB's state after
  the run, not the run's last document.
- **The materialization** of a KB partition carries those counts (documents, ingested, skipped,
  failed, pending, chunks), this run's figures, and a table of the KB's failed and skipped
  documents with their reasons, and of its documents ingested with a warning (PDF pages no
  reader could read: error `unread_pages`): asset page, partition, metadata, two clicks away.
- **Two checks, attached to the step's own outputs** (`AssetCheckResult`s yielded by the asset,
  so Dagster records them as planned and evaluated for the run's partition, which the check's
  Partitions tab reads):
  `check_kb_documents_ingested`, partitioned by KB: passes only when the KB has no failed and
  no skipped document and no warning; fails with severity ERROR when any document failed, WARN
  when some were only skipped (empty, unsupported, too large, no text: deliberately not indexed,
  still not healthy) or ingested with unread pages; the documents are in its metadata.
  `check_documents_ingested`, unpartitioned: the same verdict over every KB. Dagster's asset
  health follows the latest evaluation of each check key; for a partitioned check that is the
  latest KB evaluated, so a good KB would turn the badge green while another has failures. The
  unpartitioned check is evaluated over the whole catalog at the end of every run, so the asset's
  health stays red while any document anywhere is failed.
- We do not fail the step for a bad document: a failed step marks the whole partition failed,
  retries the run and hides the documents that were ingested. A bad file is data, not a crash.
"""

import time
import warnings
from collections import Counter

import dagster as dg
from pydantic import Field

from quivr_pipelines.core.catalog import repository
from quivr_pipelines.core.catalog.status import KbHealth, kb_health, problem_documents
from quivr_pipelines.core.errors import DocumentStatus
from quivr_pipelines.core.pipeline import DocumentOutcome, IngestionContext, ingest_in_batches
from quivr_pipelines.core.sync import plan_kb, record_refused
from quivr_pipelines.defs.ingestion.partitions import kb_partitions
from quivr_pipelines.resources import (
    DatabaseResource,
    EmbedderResource,
    ObjectStoreResource,
    ParserResource,
    VectorStoreResource,
)

ASSET_KEY = dg.AssetKey("indexed_documents")
KB_CHECK = "check_kb_documents_ingested"
ALL_CHECK = "check_documents_ingested"
# A run works through its documents in batches: parsed in parallel (the next batch while this one
# is embedded), embedded together, written in one hold of the store, recorded. 32 one-chunk
# documents fill an inference batch of the local embedder.
DOCUMENTS_PER_BATCH = 32
# Rows of the failure tables shown in the UI; `quivr-pipelines status --kb KB` lists them all.
PROBLEMS_IN_MATERIALIZATION = 50
PROBLEMS_LOGGED = 100  # per run, as warnings in the run's log
PROBLEMS_IN_CHECK = 500
KBS_IN_CHECK = 100


with warnings.catch_warnings():
    # Partitioned check specs are a Dagster "preview" feature (1.13): chosen knowingly, see above.
    warnings.simplefilter("ignore", dg.PreviewWarning)
    CHECK_SPECS = [
        dg.AssetCheckSpec(
            KB_CHECK, asset=ASSET_KEY, partitions_def=kb_partitions,
            description="This KB has no failed (ERROR), no skipped (WARN) and no warned (WARN: unread PDF pages) document; the "
                        "metadata lists them with their reasons."),
        dg.AssetCheckSpec(
            ALL_CHECK, asset=ASSET_KEY,
            description="No KB has a failed (ERROR), skipped or warned (WARN) document; the metadata "
                        "gives the counts of each KB."),
    ]


class IngestConfig(dg.Config):
    """Run options of `ingest_documents_job` (the sensor fills `documents`)."""

    documents: list[str] = Field(
        default_factory=list,
        description="Object keys of this KB to ingest. Empty: every new, changed or retryable "
                    "document of the KB, listed now.")
    force: bool = Field(
        default=False,
        description="Re-ingest documents even when unchanged (embeddings come from the cache).")


@dg.multi_asset(
    specs=[dg.AssetSpec(
        ASSET_KEY,
        group_name="ingestion",
        kinds={"unstructured", "qdrant", "postgres"},
        partitions_def=kb_partitions,
        description="The documents of each knowledge base, parsed, chunked, embedded and written "
                    "to its Qdrant collection. Partitioned by KB; per-document status is in the "
                    "catalog and summarised in each materialization.",
    )],
    check_specs=CHECK_SPECS,
    can_subset=True,
    partitions_def=kb_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
)
def indexed_documents(
    context: dg.AssetExecutionContext,
    config: IngestConfig,
    object_store: ObjectStoreResource,
    vector_store: VectorStoreResource,
    embedder: EmbedderResource,
    database: DatabaseResource,
    parser: ParserResource,
):
    kb = context.partition_key
    db = database.get()
    if ASSET_KEY in context.selected_asset_keys:
        ctx = IngestionContext(
            store=object_store.get(), vectors=vector_store.get(), embedder=embedder.get(), db=db,
            defaults=parser.kb_defaults(), max_bytes=parser.max_upload_bytes,
            batch_size=embedder.batch_size, run_id=context.run.run_id, parser=parser.pool,
        )
        documents = config.documents or _plan(ctx, kb, config.force)
        tally = _ingest(context, ctx, kb, documents, config.force)
    healths = kb_health(db)  # every KB, read back after the run: one grouped query
    health = healths.get(kb, KbHealth(kb))
    total = _total(healths)
    if ASSET_KEY in context.selected_asset_keys:
        yield dg.MaterializeResult(asset_key=ASSET_KEY, metadata=_materialization_metadata(
            db, health, total, tally, ctx.embedder.fingerprint))
    yield _kb_check(db, health)
    yield _all_check(healths, total)


def _plan(ctx: IngestionContext, kb: str, force: bool) -> list[str]:
    """A run launched without a document list (from the UI): the KB's documents to do now."""
    repository.ensure_kb(ctx.db, kb, ctx.defaults)
    plan = plan_kb(ctx.store, ctx.db, kb)
    record_refused(ctx.db, kb, plan.refused)  # as the sensor and `ingest` do: never read, recorded
    return list(plan.etags) if force else plan.to_ingest


PROBLEM_STATUSES = (DocumentStatus.FAILED, DocumentStatus.SKIPPED)


class _Tally:
    """This run's outcomes, for its materialization."""

    def __init__(self, requested: int):
        self.requested = requested
        self.statuses: Counter[str] = Counter()
        self.chunks = self.tokens = 0
        self.started = time.perf_counter()

        self.warned = 0  # ingested with a warning (unread pages)

    @property
    def problems(self) -> int:
        return sum(self.statuses[status] for status in PROBLEM_STATUSES) + self.warned

    def add(self, outcome: DocumentOutcome) -> None:
        self.statuses[outcome.status] += 1
        self.warned += outcome.warning is not None
        if outcome.status == DocumentStatus.INGESTED:
            self.chunks += outcome.chunks
            self.tokens += outcome.tokens


def _ingest(context: dg.AssetExecutionContext, ctx: IngestionContext, kb: str, documents: list[str],
            force: bool) -> _Tally:
    tally = _Tally(len(documents))
    done = 0
    for outcomes in ingest_in_batches(ctx, kb, documents, DOCUMENTS_PER_BATCH, force=force):
        for outcome in outcomes:
            tally.add(outcome)
            problem = (f"{outcome.status} {outcome.object_key}: {outcome.error_type}: {outcome.reason}"
                       if outcome.status in PROBLEM_STATUSES else
                       f"{outcome.status} {outcome.object_key} with a warning: unread_pages: {outcome.warning}"
                       if outcome.warning else None)
            if problem and tally.problems <= PROBLEMS_LOGGED:
                context.log.warning(problem + (" (further problems are in the materialization only)"
                                               if tally.problems == PROBLEMS_LOGGED else ""))
        done += len(outcomes)
        counts = {str(status): n for status, n in tally.statuses.items()}
        context.log.info(f"documents done {done}/{len(documents)} ({counts})")
    return tally


def _problems_table(rows: list[dict], total: int, kb: str) -> dg.MetadataValue:
    if not rows:
        return dg.MetadataValue.md("No failed or skipped documents.")
    lines = ["| status | document | error | reason |", "|---|---|---|---|"]
    lines += [f"| {r['status']} | {_cell(r['object_key'])} | {r['error_type'] or ''} | {_cell(r['failure_reason'] or '')} |"
              for r in rows]
    if total > len(rows):
        lines.append(f"\n{total - len(rows)} more: `quivr-pipelines status --kb {kb}` lists them all.")
    return dg.MetadataValue.md("\n".join(lines))


def _cell(text: str) -> str:
    """Markdown-safe table cell: no pipes, newlines or control characters from a file name or an
    error message (control characters are shown escaped, as in `bad\\x1bname.txt`)."""
    text = "".join(ch if ch.isprintable() or ch == " " else f"\\x{ord(ch):02x}" for ch in str(text))
    return " ".join(text.replace("|", "\\|").split())[:300]


def _total(healths: dict[str, KbHealth]) -> KbHealth:
    return KbHealth("*", **{name: sum(getattr(h, name) for h in healths.values())
                            for name in ("ingested", "skipped", "failed", "pending", "deleted", "chunks",
                                         "warned")})


def _materialization_metadata(db, health: KbHealth, total: KbHealth, tally: _Tally, model: str) -> dict:
    problems = health.failed + health.skipped + health.warned
    rows = problem_documents(db, health.kb, PROBLEMS_IN_MATERIALIZATION) if problems else []
    return {
        **{name: dg.MetadataValue.int(value) for name, value in health.as_dict().items()},
        "status": dg.MetadataValue.text(health.summary()),
        # The overview shows the newest materialization of any KB: say where the others stand.
        "all_kbs": dg.MetadataValue.text(total.summary()),
        "run_documents": dg.MetadataValue.int(tally.requested),
        "run_ingested": dg.MetadataValue.int(tally.statuses[DocumentStatus.INGESTED]),
        "run_failed": dg.MetadataValue.int(tally.statuses[DocumentStatus.FAILED]),
        "run_skipped": dg.MetadataValue.int(tally.statuses[DocumentStatus.SKIPPED]),
        "run_warned": dg.MetadataValue.int(tally.warned),
        "run_unchanged": dg.MetadataValue.int(tally.statuses[DocumentStatus.UNCHANGED]
                                              + tally.statuses[DocumentStatus.MISSING]),
        "run_chunks": dg.MetadataValue.int(tally.chunks),
        "run_tokens": dg.MetadataValue.int(tally.tokens),
        "run_seconds": dg.MetadataValue.float(round(time.perf_counter() - tally.started, 3)),
        "model": dg.MetadataValue.text(model),
        "problems": _problems_table(rows, problems, health.kb),
    }


def _severity(health: KbHealth) -> dg.AssetCheckSeverity:
    """WARN only for skipped documents or warnings and nothing failed. A passing check says ERROR
    too: the UI colours a partitioned check's badge with the severity of its latest evaluation."""
    if (health.skipped or health.warned) and not health.failed:
        return dg.AssetCheckSeverity.WARN
    return dg.AssetCheckSeverity.ERROR


def _kb_check(db, health: KbHealth) -> dg.AssetCheckResult:
    problems = health.failed + health.skipped + health.warned
    rows = problem_documents(db, health.kb, PROBLEMS_IN_CHECK) if problems else []
    return dg.AssetCheckResult(
        check_name=KB_CHECK,
        passed=health.healthy,
        severity=_severity(health),
        description=f"{health.kb}: {health.summary()}",
        metadata={**health.as_dict(), "problems": _problems_table(rows, problems, health.kb)},
    )


def _all_check(healths: dict[str, KbHealth], total: KbHealth) -> dg.AssetCheckResult:
    worst = sorted(healths.values(), key=lambda h: (-h.failed, -h.skipped, -h.warned, h.kb))[:KBS_IN_CHECK]
    lines = ["| KB | ingested | failed | skipped | pending | warnings |", "|---|---|---|---|---|---|"]
    lines += [f"| {h.kb} | {h.ingested} | {h.failed} | {h.skipped} | {h.pending} | {h.warned} |" for h in worst]
    unhealthy = [h.kb for h in healths.values() if not h.healthy]
    return dg.AssetCheckResult(
        check_name=ALL_CHECK,
        passed=not unhealthy,
        severity=_severity(total),
        description=(f"{len(unhealthy)} of {len(healths)} KBs have failed, skipped or warned documents: "
                     f"{total.summary()}" if unhealthy else f"{len(healths)} KBs: {total.summary()}"),
        metadata={**total.as_dict(), "knowledge_bases": len(healths), "unhealthy_kbs": len(unhealthy),
                  "by_kb": dg.MetadataValue.md("\n".join(lines))},
    )
