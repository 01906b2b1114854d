"""The Dagster model at millions of documents (issue 8). Figures are printed, never asserted.

    python benchmarks/scale.py [--scales 1x10000,1x1000000,10x200000] [--quick] [--events runs|runless]

A scale is KBSxDOCUMENTS_PER_KB. The 10,000-document baseline (1x10000) always runs first, in the
same process, and every other scale is compared with it. `--quick` is 1x10000, 1x100000,
10x20000 (a smoke run); the default is the issue's: 1x10000, 1x1000000 and 10x200000.
Recording a run's events costs ~0.1 s (Dagster's SQLite event storage), so `--quick` takes ~8
minutes, `--scales 1x10000` alone under a minute, and the default ~65 minutes (2 cores).
The steady sensor pass stops after 3x the ideal number of ticks + 10 (`pass_complete: false`,
`passes_by_kb` says which KBs were reached).

For each scale, from nothing:

- a catalog in a fresh schema (the project's migrations): the KB rows and one `documents` row
  per document, written with COPY (synthetic keys, real rows: etags, sizes, chunk counts, run
  ids, timestamps; 0.3 % skipped and 0.1 % failed, with the reasons the pipeline gives, none of
  them transient so a steady sync has nothing to retry), then VACUUM ANALYZE (autovacuum's work);
- an object store twin (`SyntheticStore`, the `ObjectStore` protocol) that generates the same keys
  and etags on the fly, handed to the sensor as an `ObjectStoreResource` subclass;
- a SQLite Dagster instance (no dagster.yaml: the embedded default's storage) holding what the
  deployment's runs would have written: one run of 100 documents per batch (10,000 runs at 1M),
  each with its run record and its step's asset events (materialization of the KB partition and
  the two check evaluations, with planned events; metadata built by documents.py's own helpers
  from the catalog). How: see `--events` below and `events.how` in the output;
- then, on that instance: sensor ticks over every KB in steady state (nothing changed), one tick
  where 1,000 documents are new, the partitions of every asset, the instance's size, the
  catalog's size, the end-of-run summary queries of a run (kb_health, problem_documents; with
  EXPLAIN ANALYZE), the GraphQL operations the UI sends for the asset page, the Partitions tab
  (and one partition selected) and the check's Partitions tab (cold: first request after the
  code location is up; warm: median of 3), and the cost of one more run's events.

`--events runs` (default): nothing is executed; each run is recorded through the instance as the
run worker records it: `add_run` (tags and run config of a sensor-launched run), then
`report_dagster_event` for RUN_START, the three planned events, ASSET_MATERIALIZATION, the two
ASSET_CHECK_EVALUATIONs (target materialization set, as in a run) and RUN_SUCCESS. A real run
also writes ~14 other events (step start/output/success, logs, resource init); they go to the
run's own shard and are not read by the asset views. SQLite storage gives each run its own
event-log shard file, and Dagster initialises each new shard with alembic (~150 ms, paid by real
runs too); to build 20,000 of them in minutes the benchmark copies one shard that Dagster
initialised instead (same file). The instance is built under /dev/shm when there is room and
copied to disk before anything is measured (`--build-dir` to choose).
`--events runless`: `report_runless_asset_event` of `AssetMaterialization(partition=kb)` and of the
unpartitioned check's `AssetCheckEvaluation` per run; the partitioned check only once per KB:
Dagster 1.13 stores runless check evaluations under run id "" with a unique (asset, check,
run id, partition) key, so a second runless evaluation of the same check partition is refused.

Uses QUIVR_DATABASE_URL if set (each scale its own schema, dropped after it), else the embedded
PostgreSQL under the temporary work dir.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_SCALES = "1x10000,1x1000000,10x200000"
QUICK_SCALES = "1x10000,1x100000,10x20000"
BASELINE = (1, 10_000)
NEW_DOCUMENTS = 1_000
MODEL = "local:all-MiniLM-L6-v2:384"
EXTENSIONS = ("pdf", "docx", "txt", "md", "html", "pdf", "pptx", "txt")
LAST_MODIFIED = datetime(2026, 11, 1, tzinfo=UTC)
SKIPPED = [("empty", "the document is empty"),
           ("no_text", "no text could be extracted (a scanned PDF without a text layer?)"),
           ("unsupported_type", "unsupported content type application/zip"),
           ("too_large", "31457280 bytes is larger than MAX_UPLOAD_SIZE_MB (25 MB)")]
FAILED = [("parse_error", "PDFSyntaxError: No /Root object! - Is this really a PDF?"),
          ("corrupt", "File is not a zip file (truncated DOCX?)"),
          ("encrypted", "the PDF is password-protected")]
WARM_REPEATS = 3
UI_VIEWS_MEASURED = [  # (view, needs check name, needs partition)
    ("asset_overview", False, False),
    ("asset_partitions", False, False),
    ("asset_partition_selected", False, True),
    ("asset_checks", True, False),
    ("check_partitions", True, False),
    ("check_partition_selected", True, True),
]


# --- synthetic documents: the same keys, etags and sizes in the store twin and the catalog -----

def kb_name(k: int) -> str:
    return f"kb-{k:02d}"


def doc_key(i: int) -> str:
    return f"docs/{i // 1000:05d}/doc-{i:07d}.{EXTENSIONS[i % len(EXTENSIONS)]}"


def doc_size(i: int) -> int:
    return 2_000 + (i * 7_919) % 400_000


def etag(kb: str, key: str) -> str:
    return hashlib.md5(f"{kb}/{key}".encode()).hexdigest()


def problem(i: int) -> tuple[str, str, str] | None:
    """(status, error_type, reason) of the few documents that are not ingested."""
    h = (i * 2_654_435_761) % 100_000
    if h < 300:
        return ("skipped", *SKIPPED[h % len(SKIPPED)])
    if h < 400:
        return ("failed", *FAILED[h % len(FAILED)])
    return None


def new_keys(documents: int, count: int) -> dict[int, list[str]]:
    """`count` new keys spread over the first folders of a KB (100 a folder), listed in the first
    tick of a pass: folder -> keys (they sort after the folder's `doc-` keys)."""
    folders = max(1, min(math.ceil(documents / 1000), math.ceil(count / 100)))
    out: dict[int, list[str]] = {}
    for j in range(count):
        out.setdefault(j % folders, []).append(f"docs/{j % folders:05d}/new-{j:04d}.txt")
    return {f: sorted(keys) for f, keys in out.items()}


class SyntheticStore:
    """An `ObjectStore` whose KBs hold `documents` synthetic objects each, generated on the fly in
    S3's key order (nothing on disk); with `new`, that many more objects in the first KB."""

    def __init__(self, kbs: int, documents: int, new: int = 0):
        from quivr_pipelines.core.content_types import content_type_for

        self.kbs = [kb_name(k) for k in range(kbs)]
        self.documents = documents
        self.new = new_keys(documents, new) if new else {}
        self._content_type = content_type_for

    def list_kbs(self) -> list[str]:
        return list(self.kbs)

    def _info(self, kb: str, key: str, size: int):
        from quivr_pipelines.core.objects import ObjectInfo

        return ObjectInfo(kb=kb, key=key, size=size, etag=etag(kb, key), last_modified=LAST_MODIFIED,
                          content_type=self._content_type(key))

    def _folder(self, kb: str, f: int) -> list[tuple[str, int]]:
        items = [(doc_key(i), doc_size(i)) for i in range(f * 1000, min(self.documents, (f + 1) * 1000))]
        if kb == self.kbs[0]:
            items += [(key, 1_234) for key in self.new.get(f, [])]
        return items

    def list_objects(self, kb: str, start_after: str | None = None) -> Iterator:
        if kb not in self.kbs:
            return
        first = int(start_after[5:10]) if start_after and start_after.startswith("docs/") else 0
        for f in range(first, math.ceil(self.documents / 1000)):
            for key, size in self._folder(kb, f):
                if start_after is None or key > start_after:
                    yield self._info(kb, key, size)

    def head(self, kb: str, key: str):
        if kb in self.kbs and key.startswith("docs/"):
            for k, size in self._folder(kb, int(key[5:10])):
                if k == key:
                    return self._info(kb, key, size)
        return None

    def read(self, kb: str, key: str, max_bytes: int):
        from quivr_pipelines.core.objects import ObjectContent

        info = self.head(kb, key)
        if info is None:
            from quivr_pipelines.core.errors import ErrorType, IngestionError

            raise IngestionError(ErrorType.NOT_FOUND, "object no longer exists in the store")
        return ObjectContent(info=info, data=f"document {kb}/{key}\n".encode())

    def put(self, kb: str, key: str, data: bytes):
        raise NotImplementedError("the synthetic store is read-only")

    def uri(self, kb: str, key: str) -> str:
        return f"s3://synthetic/{kb}/{key}"


def _store_resource_class():
    from quivr_pipelines.resources import ObjectStoreResource

    class SyntheticStoreResource(ObjectStoreResource):
        """The benchmark's object store twin (generated keys, nothing on disk)."""

        kbs: int
        documents_per_kb: int
        new_documents: int = 0

        def _build(self):
            return SyntheticStore(self.kbs, self.documents_per_kb, self.new_documents)

    return SyntheticStoreResource


# --- the synthetic run history: which run wrote which documents, when ------------------------

class History:
    """Runs of 100 documents (QUIVR_DOCUMENTS_PER_RUN), KBs interleaved as a sensor would start
    them, a few seconds apart, ending now."""

    def __init__(self, kbs: int, documents: int, per_run: int):
        self.kbs, self.documents, self.per_run = kbs, documents, per_run
        self.runs_per_kb = math.ceil(documents / per_run)
        self.total_runs = self.runs_per_kb * kbs
        self.end = datetime.now(UTC) - timedelta(minutes=5)

    def sequence(self, k: int, r: int) -> int:
        return r * self.kbs + k

    def at(self, k: int, r: int) -> datetime:
        return self.end - timedelta(seconds=3 * (self.total_runs - self.sequence(k, r)))

    @staticmethod
    def run_id(k: int, r: int) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"quivr-scale-bench/{k}/{r}"))

    def order(self) -> Iterator[tuple[int, int]]:
        for r in range(self.runs_per_kb):
            for k in range(self.kbs):
                yield k, r

    def documents_of(self, r: int) -> range:
        return range(r * self.per_run, min(self.documents, (r + 1) * self.per_run))


# --- the catalog ---------------------------------------------------------------------------------

COPY_COLUMNS = ("kb, object_key, etag, sha256, size_bytes, content_type, source_uri, status, error_type,"
                " failure_reason, page_count, element_count, chunk_count, token_count, parse_seconds,"
                " embed_seconds, write_seconds, total_seconds, collection, embedding_model, first_seen_at,"
                " ingested_at, updated_at, dagster_run_id, requested_etag, requested_at")


def _rows(kb: str, k: int, history: History, collection: str, content_type) -> Iterator[str]:
    n = r"\N"
    types = {ext: content_type(f"x.{ext}") or n for ext in EXTENSIONS}  # per key: ~10 us, half the COPY
    for r in range(history.runs_per_kb):
        run_id = history.run_id(k, r)
        at = history.at(k, r)
        requested = (at - timedelta(seconds=90)).isoformat()
        first_seen = requested
        done = at.isoformat()
        for i in history.documents_of(r):
            key = doc_key(i)
            tag = etag(kb, key)
            sha = hashlib.sha256(tag.encode()).hexdigest()
            bad = problem(i)
            ctype = types[EXTENSIONS[i % len(EXTENSIONS)]]
            uri = f"s3://synthetic/{kb}/{key}"
            if bad is None:
                chunks = 1 + i % 7
                parse, embed = 0.05 + (i % 50) / 100, 0.021 * chunks
                yield (f"{kb}\t{key}\t{tag}\t{sha}\t{doc_size(i)}\t{ctype}\t{uri}\tingested\t{n}\t{n}\t"
                       f"{1 + i % 12}\t{5 + i % 40}\t{chunks}\t{chunks * 280}\t{parse:.3f}\t{embed:.3f}\t0.003\t"
                       f"{parse + embed + 0.003:.3f}\t{collection}\t{MODEL}\t{first_seen}\t{done}\t{done}\t"
                       f"{run_id}\t{tag}\t{requested}\n")
            else:
                status, error_type, reason = bad
                yield (f"{kb}\t{key}\t{tag}\t{sha}\t{doc_size(i)}\t{ctype}\t{uri}\t{status}\t{error_type}\t"
                       f"{reason}\t{n}\t{n}\t0\t0\t{0.02 + (i % 30) / 100:.3f}\t{n}\t{n}\t{0.05:.3f}\t{n}\t{n}\t"
                       f"{first_seen}\t{n}\t{done}\t{run_id}\t{tag}\t{requested}\n")


def build_catalog(db, history: History) -> dict:
    """KB rows, then every document with COPY, then VACUUM ANALYZE."""
    import psycopg
    from psycopg.copy import QueuedLibpqWriter

    from quivr_pipelines.core.catalog import repository
    from quivr_pipelines.core.content_types import content_type_for
    from quivr_pipelines.core.pipeline import collection_name
    from quivr_pipelines.resources import ParserResource

    defaults = ParserResource().kb_defaults()
    started = time.perf_counter()
    for k in range(history.kbs):
        repository.ensure_kb(db, kb_name(k), defaults)
        repository.set_kb_collection(db, kb_name(k), collection_name(kb_name(k), MODEL), MODEL)
    # The rows are generated while a writer thread sends the previous block (QueuedLibpqWriter).
    with (db.transaction() as conn, conn.cursor() as cur,
          cur.copy(f"COPY documents ({COPY_COLUMNS}) FROM STDIN", writer=QueuedLibpqWriter(cur)) as copy):
        for k in range(history.kbs):
            kb = kb_name(k)
            buffer: list[str] = []
            for row in _rows(kb, k, history, collection_name(kb, MODEL), content_type_for):
                buffer.append(row)
                if len(buffer) >= 20_000:
                    copy.write("".join(buffer))
                    buffer.clear()
            if buffer:
                copy.write("".join(buffer))
    copied = time.perf_counter() - started
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{db.schema}"')
        started_vacuum = time.perf_counter()
        conn.execute("VACUUM ANALYZE documents")
        conn.execute("VACUUM ANALYZE knowledge_bases")
        vacuumed = time.perf_counter() - started_vacuum
        counts = dict(conn.execute("SELECT status, count(*) FROM documents GROUP BY status").fetchall())
    return {"rows": sum(counts.values()), "by_status": counts, "copy_seconds": round(copied, 1),
            "vacuum_analyze_seconds": round(vacuumed, 1)}


# --- the Dagster events --------------------------------------------------------------------------

def run_metadata(db, kbs: list[str]) -> dict:
    """The metadata a run of each KB writes, built by documents.py's helpers from the catalog (the
    KB's counts, the problems tables, the all-KB table) and the figures of a 100-document run."""
    import dagster as dg

    from quivr_pipelines.core.catalog.status import KbHealth, kb_health
    from quivr_pipelines.core.errors import DocumentStatus
    from quivr_pipelines.defs.ingestion import documents

    healths = kb_health(db)
    total = documents._total(healths)
    out = {}
    for kb in kbs:
        health = healths.get(kb, KbHealth(kb))
        tally = documents._Tally(100)
        tally.statuses.update({DocumentStatus.INGESTED: 99, DocumentStatus.SKIPPED: 1})
        tally.chunks, tally.tokens = 396, 110_880
        metadata = documents._materialization_metadata(db, health, total, tally, MODEL)
        metadata["run_seconds"] = dg.MetadataValue.float(41.7)  # a run's, not 0
        out[kb] = {"materialization": metadata, "kb_check": documents._kb_check(db, health),
                   "all_check": documents._all_check(healths, total)}
    return out


def _payload_bytes(meta: dict) -> dict:
    import dagster as dg

    from quivr_pipelines.defs.ingestion.documents import ASSET_KEY

    def size(value) -> int:
        return len(dg.serialize_value(value))

    kb_check, all_check = meta["kb_check"], meta["all_check"]
    return {
        "materialization": size(dg.AssetMaterialization(ASSET_KEY, partition="kb", metadata=meta["materialization"])),
        "kb_check": size(dg.AssetCheckEvaluation(ASSET_KEY, kb_check.check_name, kb_check.passed,
                                                 metadata=kb_check.metadata, partition="kb")),
        "all_check": size(dg.AssetCheckEvaluation(ASSET_KEY, all_check.check_name, all_check.passed,
                                                  metadata=all_check.metadata)),
    }


class Recorder:
    """Writes the synthetic runs' Dagster events into an instance (see the module docstring).
    With `template_shards`, a new run's event-log shard is a copy of one Dagster initialised."""

    def __init__(self, instance, mode: str, history: History, metadata: dict, template_shards: bool = True):
        self.instance, self.mode, self.history, self.metadata = instance, mode, history, metadata
        storage = instance.event_log_storage
        base = getattr(storage, "_base_dir", None)  # SqliteEventLogStorage: one file per run
        self.shards = Path(base) if template_shards and base and hasattr(storage, "_initialized_dbs") else None
        self.template: Path | None = None
        self.events = 0
        self.shards_copied = 0

    def _prepare_shard(self, run_id: str) -> None:
        if self.shards is None:
            return
        storage = self.instance.event_log_storage
        if self.template is None:  # Dagster initialises one shard (a throwaway run id): the template
            probe = "scale-bench-template"
            with storage.run_connection(probe):
                pass
            self.template = self.shards.parent / "scale-bench-shard-template.db"
            shutil.move(self.shards / f"{probe}.db", self.template)
            storage._initialized_dbs.discard(probe)
        shutil.copyfile(self.template, self.shards / f"{run_id}.db")
        storage._initialized_dbs.add(run_id)
        self.shards_copied += 1

    def record(self, k: int, r: int, documents: list[str], tick: int) -> None:
        if self.mode == "runless":
            self._record_runless(k, r)
        else:
            self._record_run(k, r, documents, tick)

    def _event(self, run_id: str, event_type, data=None, step: str | None = "indexed_documents") -> None:
        from dagster._core.events import DagsterEvent

        from quivr_pipelines.defs.ingestion.jobs import INGEST_JOB_NAME

        self.instance.report_dagster_event(
            DagsterEvent(event_type_value=event_type.value, job_name=INGEST_JOB_NAME, step_key=step,
                         step_kind_value="COMPUTE" if step else None, event_specific_data=data,
                         pid=os.getpid()),
            run_id=run_id)
        self.events += 1

    def _record_run(self, k: int, r: int, documents: list[str], tick: int) -> None:
        import dagster as dg
        from dagster._core.definitions.asset_checks.asset_check_evaluation import (
            AssetCheckEvaluationPlanned,
            AssetCheckEvaluationTargetMaterializationData,
        )
        from dagster._core.definitions.partitions.subset import DefaultPartitionsSubset
        from dagster._core.events import AssetMaterializationPlannedData, DagsterEventType, StepMaterializationData

        from quivr_pipelines.defs.ingestion.documents import ALL_CHECK, ASSET_KEY, KB_CHECK
        from quivr_pipelines.defs.ingestion.jobs import DOCUMENTS_TAG, INGEST_JOB_NAME

        kb, run_id = kb_name(k), self.history.run_id(k, r)
        meta = self.metadata[kb]
        self._prepare_shard(run_id)
        self.instance.add_run(dg.DagsterRun(
            job_name=INGEST_JOB_NAME, run_id=run_id, status=dg.DagsterRunStatus.NOT_STARTED,
            run_config={"ops": {"indexed_documents": {"config": {"documents": documents, "force": False}}},
                        "loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            tags={"dagster/partition": kb, "dagster/partition_set": f"{INGEST_JOB_NAME}_partition_set",
                  DOCUMENTS_TAG: str(len(documents)), "dagster/max_retries": "2",
                  "dagster/retry_strategy": "FROM_FAILURE", "dagster/sensor_name": "object_store_sensor",
                  "dagster/run_key": f"tick-{tick}:{r % 10}"}))
        self._event(run_id, DagsterEventType.RUN_START, step=None)
        self._event(run_id, DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
                    AssetMaterializationPlannedData(ASSET_KEY, partition=kb))
        self._event(run_id, DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
                    AssetCheckEvaluationPlanned(asset_key=ASSET_KEY, check_name=ALL_CHECK))
        self._event(run_id, DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
                    AssetCheckEvaluationPlanned(asset_key=ASSET_KEY, check_name=KB_CHECK,
                                                partitions_subset=DefaultPartitionsSubset({kb})))
        self._event(run_id, DagsterEventType.ASSET_MATERIALIZATION, StepMaterializationData(
            dg.AssetMaterialization(ASSET_KEY, partition=kb, metadata=meta["materialization"])))
        latest = self.instance.fetch_materializations(ASSET_KEY, limit=1).records[0]
        target = AssetCheckEvaluationTargetMaterializationData(
            storage_id=latest.storage_id, run_id=run_id, timestamp=latest.timestamp)
        for result, partition in ((meta["kb_check"], kb), (meta["all_check"], None)):
            self._event(run_id, DagsterEventType.ASSET_CHECK_EVALUATION, dg.AssetCheckEvaluation(
                ASSET_KEY, result.check_name, result.passed, metadata=result.metadata,
                target_materialization_data=target, severity=result.severity,
                description=result.description, blocking=False, partition=partition))
        self._event(run_id, DagsterEventType.RUN_SUCCESS, step=None)

    def _record_runless(self, k: int, r: int) -> None:
        import dagster as dg

        from quivr_pipelines.defs.ingestion.documents import ASSET_KEY

        kb = kb_name(k)
        meta = self.metadata[kb]
        self.instance.report_runless_asset_event(
            dg.AssetMaterialization(ASSET_KEY, partition=kb, metadata=meta["materialization"]))
        checks = [(meta["all_check"], None)]
        if r == self.history.runs_per_kb - 1:  # the partitioned check: one runless evaluation per KB
            checks.append((meta["kb_check"], kb))
        for result, partition in checks:
            self.instance.report_runless_asset_event(dg.AssetCheckEvaluation(
                ASSET_KEY, result.check_name, result.passed, metadata=result.metadata,
                severity=result.severity, description=result.description, partition=partition))
        self.events += 1 + len(checks)

    def cleanup(self) -> None:
        if self.template is not None and self.template.exists():
            self.template.unlink()


def write_instance_yaml(home: Path) -> None:
    """The project's dagster.yaml (the embedded default: SQLite storage, telemetry off) with its
    folders pointed at `home`."""
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text().replace(".quivr/dagster", str(home)))


def build_instance(home: Path, history: History, metadata: dict, mode: str) -> dict:
    import dagster as dg

    from quivr_pipelines.defs.ingestion.partitions import kb_partitions

    write_instance_yaml(home)
    instance = dg.DagsterInstance.from_config(str(home))
    instance.add_dynamic_partitions(kb_partitions.name, [kb_name(k) for k in range(history.kbs)])
    recorder = Recorder(instance, mode, history, metadata)
    started = time.perf_counter()
    report_every = max(1, history.total_runs // 10)
    for n, (k, r) in enumerate(history.order(), 1):
        recorder.record(k, r, [doc_key(i) for i in history.documents_of(r)], tick=1 + n // 10)
        if n % report_every == 0:
            elapsed = time.perf_counter() - started
            print(f"  events: {n}/{history.total_runs} runs, {elapsed:.0f} s", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - started
    recorder.cleanup()
    instance.dispose()
    return {"runs": history.total_runs if mode == "runs" else 0, "events_written": recorder.events,
            "seconds": round(seconds, 1), "ms_per_run": round(1000 * seconds / history.total_runs, 1),
            "ms_per_event": round(1000 * seconds / max(1, recorder.events), 2),
            "shards_from_template": recorder.shards_copied}


# --- measurements --------------------------------------------------------------------------------

def _du(path: Path) -> dict:
    def kib(p: Path) -> int:
        return int(subprocess.run(["du", "-sk", str(p)], capture_output=True, text=True, check=True).stdout.split()[0])

    out = {"total_mb": round(kib(path) / 1024, 1)}
    runs = path / "history" / "runs"
    if runs.is_dir():
        shards = [p for p in runs.glob("*.db") if p.name != "index.db"]
        out["runs_db_mb"] = round((path / "history" / "runs.db").stat().st_size / 2**20, 1)
        out["event_index_db_mb"] = round((runs / "index.db").stat().st_size / 2**20, 1)
        out["run_shards"] = len(shards)
        out["run_shards_mb"] = round(sum(p.stat().st_size for p in shards) / 2**20, 1)
    return out


def _tick(instance, resources: dict, cursor: str | None):
    import dagster as dg

    from quivr_pipelines.defs.ingestion.sensors import object_store_sensor

    started = time.perf_counter()
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        result = object_store_sensor(context)
    return result, context.cursor, time.perf_counter() - started


def _counts(result) -> dict:
    reason = getattr(result.skip_reason, "skip_message", None) or ""
    return json.loads(reason.split(": ", 1)[1]) if reason.startswith("nothing to do: ") else {}


def measure_sensor(instance, resources: dict, store_resource, kbs: int, documents: int, per_tick: int) -> dict:
    """A pass over every KB from the start, nothing changed; then one tick where 1,000 documents
    of the first KB are new (cursor: a pass just completed)."""
    from quivr_pipelines.defs.ingestion.jobs import DOCUMENTS_TAG

    ideal = math.ceil(kbs * documents / per_tick)
    cap = 3 * ideal + 10
    cursor, ticks, listed, runs, kbs_done = None, [], [], 0, {}
    while len(ticks) < cap:
        result, cursor, seconds = _tick(instance, resources, cursor)
        ticks.append(seconds)
        listed.append(_counts(result).get("listed"))
        runs += len(result.run_requests or [])
        kbs_done = json.loads(cursor)["passes"]
        if len(kbs_done) == kbs and all(v >= 1 for v in kbs_done.values()):
            break
    state = json.loads(cursor)
    complete = len(kbs_done) == kbs and all(v >= 1 for v in kbs_done.values())
    steady = {
        "ticks": len(ticks), "ideal_ticks": ideal, "pass_complete": complete,
        "kbs_passed": sum(1 for v in kbs_done.values() if v >= 1),
        "passes_by_kb": kbs_done, "runs_requested": runs,
        "seconds_per_tick_median": round(statistics.median(ticks), 2),
        "seconds_per_tick_mean": round(statistics.fmean(ticks), 2),
        "max_tick_seconds": round(max(ticks), 2),
        "pass_seconds": round(sum(ticks), 1),
        "objects_listed": sum(n or 0 for n in listed),
        "ticks_seconds": [round(s, 2) for s in ticks] if len(ticks) <= 60 else None,
    }
    if not complete:
        steady["cap_reached"] = f"stopped after {cap} ticks (3x the ideal + 10)"
    # One tick with 1,000 new documents in the first KB, from the start of a pass.
    with_new = {**resources, "object_store": type(store_resource)(
        kbs=kbs, documents_per_kb=documents, new_documents=NEW_DOCUMENTS)}
    start = json.dumps({"after": {}, "passes": {kb: max(1, n) for kb, n in state["passes"].items()},
                        "tick": state.get("tick", 0)}, sort_keys=True)
    result, _, seconds = _tick(instance, with_new, start)
    requests = result.run_requests or []
    new_tick = {"seconds": round(seconds, 2), "runs_requested": len(requests),
                "documents_requested": sum(int(r.tags.get(DOCUMENTS_TAG, 0)) for r in requests)}
    return {"objects_per_tick": per_tick, "steady_pass": steady, "tick_with_1000_new": new_tick}


def measure_listing(store_resource, per_tick: int) -> float:
    """The twin's own share of a tick: generating `per_tick` ObjectInfos (an S3 listing of as many
    objects is `per_tick / 1000` LIST requests instead)."""
    store = store_resource._build()
    started = time.perf_counter()
    for n, _ in enumerate(store.list_objects(store.kbs[0]), 1):
        if n >= per_tick:
            break
    return round(time.perf_counter() - started, 2)


class _Capture:
    """A Database stand-in that records the SQL a function sends (for EXPLAIN ANALYZE)."""

    def __init__(self, db):
        self.db, self.queries = db, []

    @contextlib.contextmanager
    def transaction(self):
        capture = self

        class Cursor:
            def __init__(self, cursor):
                self.cursor = cursor

            def execute(self, sql, params=None):
                capture.queries.append((sql, params))
                return self.cursor.execute(sql, params)

        class Conn:
            def __init__(self, conn):
                self.conn = conn

            def cursor(self, *args, **kwargs):
                return Cursor(self.conn.cursor(*args, **kwargs))

            def execute(self, sql, params=None):
                capture.queries.append((sql, params))
                return self.conn.execute(sql, params)

        with self.db.transaction() as conn:
            yield Conn(conn)


def _timed_ms(fn, repeats: int = 5) -> dict:
    times = []
    for _ in range(1 + repeats):
        started = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - started))
    return {"cold_ms": round(times[0], 1), "warm_ms": round(statistics.median(times[1:]), 1)}


def measure_summaries(db, kb: str) -> dict:
    from quivr_pipelines.core.catalog.status import kb_health, problem_documents

    calls = {
        "kb_health_one_kb": lambda d: kb_health(d, [kb]),
        "kb_health_all_kbs": lambda d: kb_health(d),
        "problem_documents_500": lambda d: problem_documents(d, kb, 500),
    }
    out = {}
    for name, call in calls.items():
        out[name] = _timed_ms(lambda call=call: call(db))
        capture = _Capture(db)
        call(capture)
        sql, params = capture.queries[-1]
        with db.transaction() as conn:
            plan = [row[0] for row in conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params).fetchall()]
        out[name]["explain_analyze"] = plan
    return out


def measure_partitions(instance) -> dict:
    import dagster as dg

    from quivr_pipelines.definitions import defs

    graph = defs().resolve_asset_graph()
    out = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        partitions = graph.get(key).partitions_def
        if partitions is None:
            out[key.to_user_string()] = 1
        elif isinstance(partitions, dg.DynamicPartitionsDefinition):
            out[key.to_user_string()] = len(instance.get_dynamic_partitions(partitions.name))
        else:
            out[key.to_user_string()] = partitions.get_num_partitions()
    for check_key in graph.asset_check_keys:
        partitions = graph.get(check_key).partitions_def
        name = f"{check_key.asset_key.to_user_string()}:{check_key.name}"
        out[name] = len(instance.get_dynamic_partitions(partitions.name)) if partitions is not None else 1
    return out


def measure_ui(instance, kb: str) -> dict:
    from quivr_pipelines.defs.ingestion.documents import ASSET_KEY, KB_CHECK
    from quivr_pipelines_tests.dagster_ui import UI_VIEWS, run_ui_operation, time_ui_view, ui_context, ui_variables

    out = {}
    started = time.perf_counter()
    with ui_context(instance) as ui:
        out["code_location_load_seconds"] = round(time.perf_counter() - started, 1)
        for view, with_check, with_partition in UI_VIEWS_MEASURED:
            kwargs = {"check_name": KB_CHECK if with_check else None, "partition": kb if with_partition else None}
            rounds = [time_ui_view(ui, view, ASSET_KEY, **kwargs) for _ in range(1 + WARM_REPEATS)]
            operations = {}
            for name in UI_VIEWS[view]:
                variables = ui_variables(name, ASSET_KEY, kwargs["check_name"], kwargs["partition"])
                response = len(json.dumps(run_ui_operation(ui, name, variables)))
                operations[name] = {"cold_ms": round(1000 * rounds[0][name], 1),
                                    "warm_ms": round(1000 * statistics.median(r[name] for r in rounds[1:]), 1),
                                    "response_kb": round(response / 1024, 1)}
            out[view] = {"cold_ms": round(1000 * sum(rounds[0].values()), 1),
                         "warm_ms": round(1000 * statistics.median(sum(r.values()) for r in rounds[1:]), 1),
                         "operations": operations}
    return out


def measure_one_more(home: Path, history: History, metadata: dict, mode: str) -> dict:
    """On the disk instance: one more run's events (median of 3), and one runless
    materialization alone (median of 5)."""
    import dagster as dg

    from quivr_pipelines.defs.ingestion.documents import ASSET_KEY

    instance = dg.DagsterInstance.from_config(str(home))
    recorder = Recorder(instance, mode, history, metadata, template_shards=False)
    runs = []
    for n in range(3):
        r = history.runs_per_kb + n  # runs after the history's
        started = time.perf_counter()
        if mode == "runs":
            recorder._record_run(0, r, [doc_key(i) for i in range(100)], tick=10**6 + n)
        else:
            recorder._record_runless(0, r)
        runs.append(1000 * (time.perf_counter() - started))
    alone = []
    for _ in range(5):
        started = time.perf_counter()
        instance.report_runless_asset_event(dg.AssetMaterialization(
            ASSET_KEY, partition=kb_name(0), metadata=metadata[kb_name(0)]["materialization"]))
        alone.append(1000 * (time.perf_counter() - started))
    recorder.cleanup()
    instance.dispose()
    return {"one_more_run_events_ms": round(statistics.median(runs), 1),
            "one_more_run_note": "Dagster's own shard init (alembic) included" if mode == "runs" else "runless",
            "one_materialization_event_ms": round(statistics.median(alone), 1)}


# --- one scale -----------------------------------------------------------------------------------

def _database_dsn(work: Path) -> str:
    if os.environ.get("QUIVR_DATABASE_URL"):
        return os.environ["QUIVR_DATABASE_URL"]
    from quivr_pipelines.core.catalog.database import embedded_postgres_dsn

    return embedded_postgres_dsn(work / "postgres")


def _drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _build_dir(work: Path, requested: str | None, needed_bytes: int) -> Path:
    if requested:
        base = Path(requested)
    else:
        shm = Path("/dev/shm")
        room = shutil.disk_usage(shm).free if shm.is_dir() else 0
        base = shm if room > 2 * needed_bytes + 2**30 else work
    return Path(tempfile.mkdtemp(prefix="quivr-scale-instance-", dir=base))


def run_scale(work: Path, dsn: str, kbs: int, documents: int, mode: str, build_dir: str | None) -> dict:
    import dagster as dg

    from quivr_pipelines.core.catalog.database import Database
    from quivr_pipelines.resources import DatabaseResource, ParserResource, SyncResource
    from quivr_pipelines.settings import get_settings

    settings = get_settings()
    label = f"{kbs}x{documents}"
    schema = f"bench_scale_{int(time.time())}_{kbs}x{documents}"
    history = History(kbs, documents, settings.documents_per_run)
    result: dict = {"scale": label, "kbs": kbs, "documents_per_kb": documents, "documents": kbs * documents,
                    "runs_in_history": history.total_runs, "load_average_at_start": os.getloadavg()}
    print(f"scale {label}: catalog", file=sys.stderr, flush=True)
    db = Database(dsn, schema=schema, pool_size=2)
    home = work / f"dagster-{label}"
    build = None
    try:
        result["catalog"] = build_catalog(db, history)
        metadata = run_metadata(db, [kb_name(k) for k in range(kbs)])
        payload = _payload_bytes(metadata[kb_name(0)])
        print(f"scale {label}: {history.total_runs} runs of events ({mode})", file=sys.stderr, flush=True)
        build = _build_dir(work, build_dir, history.total_runs * (200_000 + 2 * sum(payload.values())))
        events = build_instance(build, history, metadata, mode)
        events["built_in"] = "/dev/shm (tmpfs), then copied to disk" if str(build).startswith("/dev/shm") else "on disk"
        events["payload_bytes_per_run"] = payload
        events["how"] = (
            "nothing executed; per run: add_run (a sensor-launched run's tags and run config) and "
            "report_dagster_event of RUN_START, ASSET_MATERIALIZATION_PLANNED, 2x "
            "ASSET_CHECK_EVALUATION_PLANNED, ASSET_MATERIALIZATION (partition = KB), 2x "
            "ASSET_CHECK_EVALUATION (target materialization set), RUN_SUCCESS; metadata from "
            "documents.py's helpers over the catalog (final counts), the same for every run of a KB; "
            "run shards copied from one Dagster initialised" if mode == "runs" else
            "nothing executed; per run: report_runless_asset_event(AssetMaterialization(partition=KB)) "
            "and of the unpartitioned check's AssetCheckEvaluation; the partitioned check once per KB "
            "(Dagster refuses a second runless evaluation of a check partition); metadata from "
            "documents.py's helpers")
        result["events"] = events
        shutil.copytree(build, home)
        shutil.rmtree(build, ignore_errors=True)
        build = None
        write_instance_yaml(home)
        os.environ["DAGSTER_HOME"] = str(home)
        instance = dg.DagsterInstance.from_config(str(home))

        print(f"scale {label}: sensor", file=sys.stderr, flush=True)
        store_resource = _store_resource_class()(kbs=kbs, documents_per_kb=documents)
        sync = SyncResource(documents_per_run=settings.documents_per_run,
                            objects_per_tick=settings.sync_objects_per_tick,
                            max_run_megabytes=settings.sync_max_run_megabytes,
                            request_timeout_minutes=settings.sync_request_timeout_minutes,
                            delete_after_misses=settings.sync_delete_after_misses)
        resources = {"object_store": store_resource, "parser": ParserResource(), "sync": sync,
                     "database": DatabaseResource(url=dsn, schema_name=schema, pool_size=2)}
        result["sensor"] = measure_sensor(instance, resources, store_resource, kbs, documents,
                                          settings.sync_objects_per_tick)
        result["sensor"]["twin_listing_seconds_per_tick"] = measure_listing(store_resource, settings.sync_objects_per_tick)
        with db.transaction() as conn:  # back to the steady state: forget the 1,000 new ones
            conn.execute("DELETE FROM documents WHERE kb = %s AND object_key LIKE 'docs/%%/new-%%'", (kb_name(0),))

        print(f"scale {label}: summaries, sizes", file=sys.stderr, flush=True)
        result["end_of_run_queries"] = measure_summaries(db, kb_name(0))
        result["partitions_per_asset"] = measure_partitions(instance)
        with db.transaction() as conn:
            result["catalog"]["documents_table_mb"] = round(conn.execute(
                "SELECT pg_total_relation_size('documents')").fetchone()[0] / 2**20, 1)
        result["instance_size"] = _du(home)

        print(f"scale {label}: GraphQL", file=sys.stderr, flush=True)
        result["graphql"] = measure_ui(instance, kb_name(0))
        instance.dispose()
        result["one_more_event"] = measure_one_more(home, history, metadata, mode)
        result["load_average_at_end"] = os.getloadavg()
    finally:
        db.close()
        _drop_schema(dsn, schema)
        if build is not None:
            shutil.rmtree(build, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    return result


# --- the comparison ------------------------------------------------------------------------------

def _rows_for_table(r: dict) -> dict[str, float | None]:
    ui = r["graphql"]
    q = r["end_of_run_queries"]
    s = r["sensor"]
    return {
        "documents": r["documents"],
        "partitions of indexed_documents": r["partitions_per_asset"].get("indexed_documents"),
        "runs recorded": r["runs_in_history"],
        "recording: ms per run (bulk)": r["events"]["ms_per_run"],
        "sensor: median tick (s)": s["steady_pass"]["seconds_per_tick_median"],
        "sensor: max tick (s)": s["steady_pass"]["max_tick_seconds"],
        "sensor: ticks per pass": s["steady_pass"]["ticks"],
        "sensor: tick with 1,000 new (s)": s["tick_with_1000_new"]["seconds"],
        "instance size (MB)": r["instance_size"]["total_mb"],
        "catalog documents table (MB)": r["catalog"]["documents_table_mb"],
        "kb_health one KB (ms, warm)": q["kb_health_one_kb"]["warm_ms"],
        "kb_health all KBs (ms, warm)": q["kb_health_all_kbs"]["warm_ms"],
        "problem_documents 500 (ms, warm)": q["problem_documents_500"]["warm_ms"],
        **{f"UI {view} (ms, cold)": ui[view]["cold_ms"] for view, _, _ in UI_VIEWS_MEASURED},
        **{f"UI {view} (ms, warm)": ui[view]["warm_ms"] for view, _, _ in UI_VIEWS_MEASURED},
        "one more run's events (ms)": r["one_more_event"]["one_more_run_events_ms"],
        "one materialization event (ms)": r["one_more_event"]["one_materialization_event_ms"],
    }


def comparison_table(results: list[dict]) -> str:
    base = _rows_for_table(results[0])
    tables = [_rows_for_table(r) for r in results]
    header = "| figure | " + " | ".join(f"{r['scale']} ({r['documents']:,} docs)" for r in results) + " |"
    lines = [header, "|---|" + "---|" * len(results)]
    for name in base:
        cells = []
        for t in tables:
            value, ref = t[name], base[name]
            text = (f"{value:,}" if isinstance(value, int) else "–" if value is None
                    else f"{value:,.2f}" if value < 10 else f"{value:,.1f}")
            if t is not tables[0] and isinstance(value, int | float) and isinstance(ref, int | float) and ref:
                text += f" (×{value / ref:,.2f})"
            cells.append(text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@contextlib.contextmanager
def _stdout_to_stderr():
    """Keep stdout for the figures: Dagster's code server (a subprocess) and loggers print too."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _parse_scales(text: str) -> list[tuple[int, int]]:
    scales = []
    for item in text.split(","):
        kbs, documents = item.lower().split("x")
        scales.append((int(kbs), int(documents.replace("_", ""))))
    if BASELINE in scales:
        scales.remove(BASELINE)
    return [BASELINE, *scales]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default=None, help=f"KBSxDOCS_PER_KB,... (default {DEFAULT_SCALES})")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_SCALES}")
    parser.add_argument("--events", choices=["runs", "runless"], default="runs")
    parser.add_argument("--build-dir", default=None, help="where the instance is built (default /dev/shm if roomy)")
    args = parser.parse_args()
    scales = _parse_scales(args.scales or (QUICK_SCALES if args.quick else DEFAULT_SCALES))

    warnings.simplefilter("ignore")  # Dagster's preview/beta warnings on every definitions load
    work = Path(tempfile.mkdtemp(prefix="quivr-scale-bench-"))
    os.environ["QUIVR_DATA_DIR"] = str(work / "data")
    os.chdir(work)
    dsn = _database_dsn(work)
    results = []
    try:
        print(json.dumps({"machine": {"cores": os.cpu_count(), "load_average": os.getloadavg(),
                                      "started": datetime.now(UTC).isoformat(timespec="seconds"),
                                      "events": args.events, "scales": [f"{k}x{d}" for k, d in scales]}}),
              flush=True)
        for kbs, documents in scales:
            with _stdout_to_stderr():
                result = run_scale(work, dsn, kbs, documents, args.events, args.build_dir)
            results.append(result)
            print(json.dumps(result), flush=True)
        print()
        print(comparison_table(results))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
