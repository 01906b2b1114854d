"""`quivr-pipelines`: add documents to a KB, ingest them through Dagster, show status, search."""

from __future__ import annotations

import contextlib
import json
import os
from datetime import UTC
from enum import StrEnum
from pathlib import Path
from typing import NoReturn

import typer
from tqdm import tqdm

# rich_markup_mode=None: a usage error is click's plain "Error: ..." line, not a rich panel that
# wraps the message over several lines.
app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Ingestion and operations for RAG knowledge bases (Dagster + Qdrant).")
kb_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Knowledge base settings.")
app.add_typer(kb_app, name="kb")
keys_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="API keys of the query service.")
app.add_typer(keys_app, name="keys")
backups_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                          help="Backup sets in the artifact store (QUIVR_ARTIFACTS_URI).")
app.add_typer(backups_app, name="backups")


class SearchModeChoice(StrEnum):
    hybrid = "hybrid"
    dense = "dense"
    sparse = "sparse"


class PiiChoice(StrEnum):  # as core/pii.PiiMode (not imported: the CLI starts without presidio)
    off = "off"
    detect = "detect"
    mask = "mask"


class RoleChoice(StrEnum):
    viewer = "viewer"
    editor = "editor"
    admin = "admin"


def _settings():
    from quivr_pipelines.settings import get_settings

    return get_settings()


def _fail(message: str) -> NoReturn:
    """A failure that is not a usage error (unknown KB, ...): one line on stderr, exit 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=1)


def _kb_name(value: str | None) -> str | None:
    """Parameter callback: a well-formed KB name, or a usage error (exit 2)."""
    from quivr_pipelines.core.keys import validate_kb_name

    if value is not None:
        try:
            validate_kb_name(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _kb_names(values: list[str] | None) -> list[str] | None:
    for value in values or []:
        _kb_name(value)
    return values


def _not_blank(value: str) -> str:
    if not value.strip():
        raise typer.BadParameter("must not be empty or whitespace")
    return value


def _positive_days(value: float | None) -> float | None:
    """0 used to mean "never" (it is falsy), and inf/nan crashed: omit the option for no expiry."""
    if value is not None and not 0 < value <= 36_500:  # also false for nan
        raise typer.BadParameter(f"must be a positive number of days up to 36500, not {value}; "
                                 "omit it for a key that never expires")
    return value


@app.command()
def add(
    kb: str = typer.Argument(..., callback=_kb_name, help="Knowledge base name (a-z, 0-9, '-', '_')."),
    paths: list[Path] = typer.Argument(..., exists=True, help="Files or folders to add."),
    prefix: str = typer.Option("", help="Key prefix inside the KB, e.g. 'contracts/2024'."),
):
    """Copy local files or folders into a KB's object store (the local inbox or S3)."""
    from quivr_pipelines.core.errors import IngestionError
    from quivr_pipelines.core.factory import build_object_store

    store = build_object_store(_settings())
    files = []
    for path in paths:
        if path.is_dir():
            files.extend((p, p.relative_to(path).as_posix()) for p in sorted(path.rglob("*"))
                         if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
        else:
            files.append((path, path.name))
    added, refused = 0, []
    for file, key in tqdm(files, desc=f"adding to {kb}", unit="file", disable=len(files) < 20):
        full_key = f"{prefix.strip('/')}/{key}" if prefix.strip("/") else key
        try:
            store.put(kb, full_key, file.read_bytes())
            added += 1
        except IngestionError as exc:
            refused.append(f"{file}: {exc}")
    typer.echo(f"added {added} file(s) to {kb} at {store.uri(kb, '')}")
    for line in refused:
        typer.echo(f"refused {line}", err=True)
    if refused:
        raise typer.Exit(code=1)


@kb_app.command("set")
def kb_set(
    kb: str = typer.Argument(...),
    max_characters: int = typer.Option(None, min=100, help="Hard chunk size."),
    new_after: int = typer.Option(None, min=50, help="Soft chunk size: start a new chunk after this."),
    combine_under: int = typer.Option(None, min=0, help="Merge sections shorter than this."),
    overlap: int = typer.Option(None, min=0, help="Characters repeated between split chunks."),
    pii: PiiChoice = typer.Option(None, "--pii", help="PII handling: off, detect (count entities) or mask "
                                  "(replace them with <TYPE> before embedding); a change re-ingests the "
                                  "KB's documents at the next sync."),
):
    """Create a KB or change its settings. Chunk sizes apply to documents ingested from now on
    (use `ingest --kb KB --force` to re-chunk existing ones); a new PII mode is applied to every
    document of the KB by the next `ingest` or sensor pass."""
    from quivr_pipelines.core.catalog import repository
    from quivr_pipelines.core.factory import kb_defaults, open_database
    from quivr_pipelines.core.keys import validate_kb_name

    validate_kb_name(kb)
    settings = _settings()
    db = open_database(settings)
    try:
        repository.ensure_kb(db, kb, kb_defaults(settings))
        config = repository.configure_kb(
            db, kb, chunk_max_characters=max_characters, chunk_new_after_characters=new_after,
            chunk_combine_under_characters=combine_under, chunk_overlap_characters=overlap,
            pii=pii.value if pii else None)
    finally:
        db.close()
    typer.echo(json.dumps(config.__dict__, indent=2))


@kb_app.command("show")
def kb_show(kb: str = typer.Argument(...)):
    """Show a KB's chunk sizes, PII mode, collection and embedding model."""
    from quivr_pipelines.core.catalog import repository
    from quivr_pipelines.core.factory import open_database

    db = open_database(_settings())
    try:
        typer.echo(json.dumps(repository.get_kb(db, kb).__dict__, indent=2))
    except KeyError:
        typer.echo(f"no knowledge base named {kb!r}", err=True)
        raise typer.Exit(code=1) from None
    finally:
        db.close()


@app.command()
def ingest(
    kb: list[str] = typer.Option(None, "--kb", help="Only these KBs (default: all)."),
    force: bool = typer.Option(False, help="Re-ingest documents even when unchanged."),
):
    """Ingest new and changed documents now, as Dagster runs recorded in the instance."""
    from quivr_pipelines.runner import ingest_now

    summary = ingest_now(_settings(), kbs=kb or None, force=force, progress=True)
    typer.echo(json.dumps(summary, indent=2, default=str))
    if summary.get("runs_failed"):
        raise typer.Exit(code=1)


@app.command()
def status(
    kb: str = typer.Option(None, "--kb", help="Only this KB, with its failures and warnings."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Documents by status, chunks and last ingestion, per KB."""
    from quivr_pipelines.core.catalog import repository
    from quivr_pipelines.core.factory import open_database

    db = open_database(_settings())
    try:
        rows = repository.kb_status(db)
        problems = repository.failures(db, kb) if kb else []
    finally:
        db.close()
    if kb:
        rows = [row for row in rows if row["kb"] == kb]
        if not rows:
            _fail(f"unknown knowledge base {kb!r} (`quivr-pipelines status` lists the KBs)")
    if as_json:
        typer.echo(json.dumps({"kbs": rows, "failures": problems}, indent=2, default=str))
        return
    header = (f"{'kb':<24}{'ingested':>9}{'failed':>8}{'skipped':>8}{'deleted':>8}{'pending':>8}{'warned':>8}"
              f"{'chunks':>9}  last ingestion")
    typer.echo(header)
    for row in rows:
        last = row["last_ingestion"].isoformat(timespec="seconds") if row["last_ingestion"] else "-"
        typer.echo(f"{row['kb']:<24}{row['ingested']:>9}{row['failed']:>8}{row['skipped']:>8}"
                   f"{row['deleted']:>8}{row['pending']:>8}{row['warned']:>8}{row['chunks']:>9}  {last}")
    from quivr_pipelines.core.keys import printable

    for problem in problems:  # keys and reasons come from files: never raw escapes to the terminal
        typer.echo(f"  {problem['status']:<8} {printable(problem['object_key'])}: {problem['error_type']}: "
                   f"{printable(problem['failure_reason'])}")


@app.command()
def search(
    kb: str = typer.Argument(..., callback=_kb_name),
    query: str = typer.Argument(..., callback=_not_blank),
    top_k: int = typer.Option(5, min=1, max=50),
    mode: SearchModeChoice = typer.Option(SearchModeChoice.hybrid, help="Search mode."),
    fusion: str = typer.Option(None, "--fusion", help="Hybrid fusion, as `eval --fusion`: rrf:k=20, "
                               "rrf:dense=1,sparse=0.5, dbsf, rrf:depth=100 (default: the default fusion)."),
):
    """Search a KB from the command line (the query service offers the same over HTTP)."""
    from quivr_pipelines.core.keys import printable
    from quivr_pipelines.core.llm import LLMError
    from quivr_pipelines.core.retrieval import FingerprintMismatch, UnknownKnowledgeBase, search_kb
    from quivr_pipelines.core.vectorstore.handoff import StoreBusy

    mode = SearchModeChoice(mode).value
    fused = None
    if fusion is not None:
        from quivr_pipelines.core.evaluation import parse_fusion

        if mode != "hybrid":
            raise typer.BadParameter(f"--fusion applies to hybrid search, not --mode {mode}", param_hint="--fusion")
        try:
            fused = parse_fusion(fusion)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--fusion") from None
    try:
        hits = search_kb(_settings(), kb, query, top_k=top_k, mode=mode, fusion=fused)
    except UnknownKnowledgeBase as exc:
        _fail(f"{exc.args[0]}: no such KB, or nothing ingested into it")
    except (FingerprintMismatch, StoreBusy) as exc:
        _fail(str(exc))
    except LLMError as exc:  # the KB's embedding provider failed: its fixed message, no traceback
        _fail(str(exc))
    for hit in hits:
        page = f" p.{hit.payload.get('page_number')}" if hit.payload.get("page_number") else ""
        text = " ".join(hit.payload.get("text", "").split())[:200]
        typer.echo(f"{hit.score:.4f}  {printable(hit.payload.get('document_key'))}{page}\n        {printable(text)}")


def _eval_dataset(value: str) -> str:
    from quivr_pipelines.core.evaluation import DATASETS

    if value not in ("all", *DATASETS):
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(('all', *DATASETS))}")
    return value


def _eval_modes(value: str) -> str:
    from quivr_pipelines.core.evaluation import MODES

    modes = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise typer.BadParameter(f"expected a comma-separated list of {', '.join(MODES)}, got {value!r}")
    return value


class RepresentationChoice(StrEnum):
    points = "points"
    pipeline = "pipeline"


@app.command("eval")
def eval_retrieval(
    dataset: str = typer.Option("all", callback=_eval_dataset, help="xquad, nfcorpus or all (root layout)."),
    modes: str = typer.Option("dense,sparse,hybrid", callback=_eval_modes,
                              help="Comma-separated search modes."),
    limit: int = typer.Option(None, min=1, help="Only the first N queries of each set (quick runs)."),
    fusion: list[str] = typer.Option([], "--fusion", help="Extra hybrid run per value: rrf:k=20, "
                                     "rrf:dense=1,sparse=0.5, dbsf, rrf:depth=100 (repeatable); each is "
                                     "compared with the default fusion (paired randomisation test)."),
    data: Path = typer.Option(None, help="A BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv or "
                              "qrels*.tsv), or the root holding xquad_en/ and nfcorpus/ "
                              "(default ../shared/data/retrieval)."),
    representation: RepresentationChoice = typer.Option(
        RepresentationChoice.points, help="points: one point per corpus document (fast, cached vectors); "
        "pipeline: corpus documents as Markdown files ingested by the real pipeline (chunking included)."),
    baseline: Path = typer.Option(None, exists=True, dir_okay=False,
                                  help="A saved `eval --json` result: compare every run with the same run in it."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Re-embed documents (cache: $QUIVR_DATA_DIR/eval-cache)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable, with per-query nDCG@10 (a --baseline)."),
):
    """nDCG@10, recall@10 and MRR@10 of dense, sparse and hybrid search on XQuAD-en and NFCorpus or
    any BEIR folder, through the configured embedder and a throwaway embedded collection. The
    pipeline representation keeps its catalog in schema <QUIVR_DATABASE_SCHEMA>_eval (its
    embedding cache makes later runs cheap)."""
    from quivr_pipelines.core import evaluation
    from quivr_pipelines.core.factory import build_embedder, kb_defaults, open_database

    settings = _settings()
    names = list(evaluation.DATASETS) if dataset == "all" else [dataset]
    if data is not None and evaluation.is_beir_folder(data) and dataset != "all":
        raise typer.BadParameter(f"{data} is one BEIR set: --dataset applies to the root of the shared sets")
    representation = RepresentationChoice(representation).value
    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    catalog = None
    try:
        fusions = [evaluation.parse_fusion(spec) for spec in fusion]
        if fusions and "hybrid" not in mode_list:
            mode_list.append("hybrid")  # the default fusion each variant is compared with
        saved = evaluation.load_baseline(baseline) if baseline else None
        embedder = build_embedder(settings)
        if representation == "pipeline":
            catalog = open_database(settings.model_copy(update={"database_schema": _eval_schema(settings)}))
        scores = evaluation.run(names, embedder, mode_list, limit, fusions, data,
                                None if no_cache else settings.data_dir / "eval-cache",
                                lambda message: typer.echo(message, err=True), representation,
                                catalog, kb_defaults(settings))
    except (ValueError, FileNotFoundError, KeyError, json.JSONDecodeError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    finally:
        if catalog is not None:
            catalog.close()
    fused = evaluation.compare_fusions(scores)
    against = evaluation.compare_baseline(scores, saved) if saved else []
    if as_json:
        typer.echo(json.dumps({"embedder": embedder.fingerprint, "scores": [s.as_dict(per_query=True) for s in scores],
                               "fusion_comparisons": [c.as_dict() for c in fused],
                               "baseline_comparisons": [c.as_dict() for c in against]}, indent=1))
        return
    typer.echo(f"embedder {embedder.fingerprint}\n{evaluation.format_table(scores)}")
    if fused:
        typer.echo(f"\nfusion variants against the default (nDCG@10 per query):\n{evaluation.format_comparisons(fused)}")
    if saved is not None:
        typer.echo(f"\nagainst {baseline}:\n" + (evaluation.format_comparisons(against) if against
                                                else "no run in common with the baseline"))


def _eval_schema(settings) -> str:
    """The pipeline evaluation's catalog: beside the configured one, never inside it."""
    return f"{settings.database_schema}_eval"[:63]


REEMBED_ACTIONS = ("rollback", "cancel", "status", "cleanup")


@app.command()
def reembed(
    kb_or_action: str = typer.Argument(..., metavar="KB|rollback|cancel|status|cleanup",
                                       help="The KB to re-embed, or an action."),
    action_kb: str = typer.Argument(None, metavar="[KB]", help="The KB of rollback, cancel or status."),
    embedder: str = typer.Option(None, "--embedder", help="Target model: local, openai:MODEL[:DIMS][@BASE_URL]. "
                                                          "Unset: the serving model (a re-chunking)."),
    max_characters: int = typer.Option(None, "--max-characters", min=100, help="New chunk size."),
    new_after_characters: int = typer.Option(None, "--new-after-characters", min=50),
    combine_under_characters: int = typer.Option(None, "--combine-under-characters", min=0),
    overlap_characters: int = typer.Option(None, "--overlap-characters", min=0),
    context_headers: bool = typer.Option(None, "--context-headers/--no-context-headers"),
    margin: float = typer.Option(None, "--quality-margin", min=0, max=1,
                                 help="Allowed drop of recall@10 / nDCG@10 (default QUIVR_REEMBED_QUALITY_MARGIN)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only report chunks, cache hits, tokens and dollars."),
    generation: int = typer.Option(None, "--generation", help="rollback: this retired generation."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Re-embed or re-chunk a KB with zero downtime: build a new generation, gate it, swap the alias.

    `reembed KB --embedder ...` runs reembed_job now (recorded in the Dagster instance);
    `reembed rollback KB` serves the previous generation again; `reembed cancel KB` gives up a
    build; `reembed status [KB]` lists generations; `reembed cleanup [--dry-run]` drops those past
    the rollback window."""
    from quivr_pipelines.core import reembed as core

    action = kb_or_action if kb_or_action in REEMBED_ACTIONS else None
    kb = _kb_name(action_kb if action else kb_or_action)
    if action in ("rollback", "cancel") and kb is None:
        raise typer.BadParameter(f"reembed {action} needs a KB")
    settings = _settings()
    try:
        if action == "status":
            return _reembed_status(settings, kb, as_json)
        if action == "cleanup":
            return _reembed_job(settings, "generation_cleanup_job", {"ops": {"retired_generations": {"config": {
                "dry_run": dry_run}}}}, kb, as_json)
        if action == "cancel":
            with _reembed_context(settings) as ctx:
                gen = core.cancel(ctx, kb)
            typer.echo(f"{kb}: generation {gen.generation} ({gen.collection}) given up; its collection is kept "
                       "until `reembed cleanup`")
            return None
        if action == "rollback":
            return _reembed_job(settings, "reembed_rollback_job", {"ops": {"rollback_generation": {"config": {
                "kb": kb, "generation": generation}}}}, kb, as_json)
        target = core.Target(embedder=embedder, context_headers=context_headers, chunking={k: v for k, v in {
            "chunk_max_characters": max_characters, "chunk_new_after_characters": new_after_characters,
            "chunk_combine_under_characters": combine_under_characters,
            "chunk_overlap_characters": overlap_characters}.items() if v is not None})
        if dry_run:
            with _reembed_context(settings) as ctx:
                plan = core.plan(ctx, kb, target, settings.embedding_price_per_million)
            return _print_plan(plan, as_json)
        config = {"kb": kb, "embedder": embedder, "context_headers": context_headers,
                  "quality_margin": margin, **target.chunking}
        return _reembed_job(settings, "reembed_job", {"ops": {"kb_generation": {"config": {
            k: v for k, v in config.items() if v is not None}}}}, kb, as_json)
    except core.ReembedError as exc:
        _fail(str(exc))


@contextlib.contextmanager
def _reembed_context(settings):
    from quivr_pipelines.core import reembed as core
    from quivr_pipelines.core.embedding.registry import EmbedderRegistry
    from quivr_pipelines.core.factory import build_object_store, build_vector_store, kb_defaults, open_database

    db, store = open_database(settings), build_vector_store(settings)
    try:
        yield core.ReembedContext(vectors=store, db=db, registry=EmbedderRegistry(settings),
                                  defaults=kb_defaults(settings), objects=build_object_store(settings),
                                  max_bytes=settings.max_upload_bytes, batch_size=settings.embedding_batch_size,
                                  context_headers=settings.chunk_context_headers, page_size=settings.reembed_page_size, actor=audit_actor())
    finally:
        store.close()
        db.close()


def audit_actor() -> str:
    from quivr_pipelines.core.audit import cli_actor

    return cli_actor()


def _print_plan(plan, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(plan.as_dict(), indent=2, default=str))
        return
    est = " (estimated: the new chunks are known only after parsing)" if plan.estimated else ""
    dollars = f"${plan.dollars:.6f}" if plan.dollars is not None else "no price (QUIVR_EMBEDDING_PRICE_PER_MILLION)"
    headers = "with" if plan.chunking.get("context_headers") else "without"
    typer.echo(f"{plan.kb}: {plan.mode} from generation {plan.serving.generation} ({plan.serving.fingerprint}) to "
               f"{plan.target_fingerprint}, chunks embedded {headers} their headers\n"
               f"  documents {plan.documents}, chunks {plan.chunks}{est}\n"
               f"  cache hits {plan.cached}, to embed {plan.to_embed}, tokens {plan.tokens}, cost {dollars}")


def _reembed_status(settings, kb: str | None, as_json: bool) -> None:
    from quivr_pipelines.core import generations
    from quivr_pipelines.core.factory import open_database

    db = open_database(settings)
    try:
        rows = [g.as_dict() for g in generations.history(db, kb)]
    finally:
        db.close()
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    for g in rows:
        typer.echo(f"{g['kb']} g{g['generation']} {g['state']:<8} {g['mode']:<7} {g['fingerprint']} "
                   f"{g['chunks_done']}/{g['chunks_total']} chunks {g['collection']}"
                   + (f"  ({g['reason']})" if g.get("reason") else ""))


def _reembed_job(settings, job_name: str, run_config: dict, kb: str | None, as_json: bool) -> None:
    from quivr_pipelines.core import generations
    from quivr_pipelines.core.factory import open_database
    from quivr_pipelines.runner import run_job

    db = open_database(settings)
    bar = tqdm(desc=f"re-embedding {kb}", unit="chunk", disable=job_name != "reembed_job")

    def watch():
        gen = generations.building(db, kb) if kb else None
        if gen is not None:
            bar.total = gen.chunks_total or None
            bar.n = gen.chunks_done
            bar.refresh()

    try:
        result = run_job(settings, job_name, run_config, watch=watch if job_name == "reembed_job" else None)
        bar.close()
        summary = {"run_id": result.run_id, "success": result.success}
        if job_name == "reembed_job":
            gen = generations.of_run(db, result.run_id)
            summary["generation"] = gen.as_dict() if gen else None
            failed = [f"{name}: {v.get('description')}" for name, v in ((gen.gates or {}) if gen else {}).items()
                      if isinstance(v, dict) and "passed" in v and not v["passed"]]
            if failed:
                summary["blocked_by"] = failed
        typer.echo(json.dumps(summary, indent=2, default=str) if as_json else _job_line(job_name, kb, summary))
        if not result.success or summary.get("blocked_by"):
            failure = next((e.message for e in result.all_events if e.is_failure), None)
            _fail(f"{job_name} run {result.run_id} did not finish: "
                  + ("; ".join(summary.get("blocked_by", [])) or (failure or "see `dagster dev`").splitlines()[0]))
    finally:
        db.close()


def _job_line(job_name: str, kb: str | None, summary: dict) -> str:
    gen = summary.get("generation")
    if job_name == "reembed_job" and gen:
        return (f"{kb}: generation {gen['generation']} ({gen['collection']}) is {gen['state']}: "
                f"{gen['chunks_done']} chunks, {gen['chunks_embedded']} embedded, {gen['chunks_cached']} from the "
                f"cache, {gen['build_seconds']:.1f} s (run {summary['run_id']})")
    if job_name == "reembed_rollback_job" and summary["success"] and kb:
        from quivr_pipelines.core import generations
        from quivr_pipelines.core.factory import open_database

        db = open_database(_settings())
        try:
            gen = generations.serving(db, kb)
        finally:
            db.close()
        return f"{kb}: generation {gen.generation} ({gen.collection}) serves again (run {summary['run_id']})"
    return f"{job_name} run {summary['run_id']}: {'done' if summary['success'] else 'failed'}"


@app.command()
def demo(
    serve_ui: bool = typer.Option(False, "--ui", help="Then start `dagster dev` (UI on :3000)."),
):
    """Seed sample documents into the 'demo' KB, ingest them through Dagster, and search."""
    from quivr_pipelines.core.factory import build_object_store
    from quivr_pipelines.runner import dagster_ui_command, ingest_now

    settings = _settings()
    store = build_object_store(settings)
    samples = Path(__file__).parent / "samples"
    for sample in sorted(samples.iterdir()):
        if sample.is_file() and not sample.name.startswith("_"):
            store.put("demo", sample.name, sample.read_bytes())
    typer.echo(f"seeded {len(list(samples.iterdir()))} sample documents into {store.uri('demo', '')}")
    summary = ingest_now(settings, kbs=["demo"], progress=True)
    typer.echo(json.dumps(summary, indent=2, default=str))
    typer.echo("\nsearch 'how are deleted documents handled?':")
    search("demo", "how are deleted documents handled?", top_k=3, mode="hybrid", fusion=None)
    typer.echo("\nstatus:")
    status(kb="demo", as_json=False)
    where, command = dagster_ui_command(settings)
    typer.echo(f"\nDagster runs were recorded in {where}. See them with: {command}  (http://127.0.0.1:3000)")
    if serve_ui:
        if "DAGSTER_HOME=" in command:
            os.environ["DAGSTER_HOME"] = where
        os.execvp("dagster", ["dagster", "dev", "-m", "quivr_pipelines.definitions"])



@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, min=1, max=65535),
    workers: int = typer.Option(None, min=1, help="uvicorn worker processes (default QUIVR_SERVICE_WORKERS)."),
    tls_cert: Path = typer.Option(None, help="PEM certificate (chain): serve HTTPS, TLS 1.2 minimum "
                                             "(default QUIVR_SERVICE_TLS_CERT)."),
    tls_key: Path = typer.Option(None, help="PEM private key of --tls-cert (default QUIVR_SERVICE_TLS_KEY)."),
):
    """Run the query service (search and ask over HTTP) on the configured KBs."""
    import tempfile

    from quivr_pipelines.service import server

    settings = _settings()
    tls_cert = tls_cert or settings.service_tls_cert
    tls_key = tls_key or settings.service_tls_key
    try:
        server.check_tls_files(tls_cert, tls_key)
    except server.TLSFileError as exc:
        _fail(str(exc))
    workers = workers or settings.service_workers
    if not settings.qdrant_url:
        from quivr_pipelines.core.vectorstore.handoff import StoreServed, claim_for_serving

        if workers > 1:
            typer.echo(f"the embedded vector store is opened by one process at a time: serving with 1 worker "
                       f"instead of {workers} (set QUIVR_QDRANT_URL to a Qdrant server for more)", err=True)
            workers = 1
        try:  # held (descriptor open) until this process exits; it is the only worker
            claim_for_serving(settings.qdrant_dir)
        except StoreServed as exc:
            _fail(str(exc))
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Every worker writes its metrics there; /metrics aggregates them (multiprocess mode).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="quivr-metrics-")
    from quivr_pipelines.core.catalog.database import embedded_postgres_dsn, exit_cleanly_on_sigterm

    if not settings.database_url:
        # This process joins the embedded PostgreSQL and hands its address to the app (and to
        # every worker) as QUIVR_DATABASE_URL: the server's lifetime is this process's, which
        # stops it at exit when no other process uses it.
        os.environ["QUIVR_DATABASE_URL"] = embedded_postgres_dsn(settings.postgres_dir)
    # uvicorn handles SIGTERM while it serves, then restores the handler it found and raises the
    # signal again: that handler must exit through atexit (pgserver stops the server there).
    exit_cleanly_on_sigterm()
    server.run(server.ServiceConfig(
        "quivr_pipelines.service.app:create_app", factory=True, host=host, port=port, workers=workers,
        access_log=False, proxy_headers=True, timeout_graceful_shutdown=30,
        timeout_keep_alive=settings.service_keep_alive_seconds,
        timeout_headers=settings.service_header_timeout_seconds,
        ssl_certfile=str(tls_cert) if tls_cert else None, ssl_keyfile=str(tls_key) if tls_key else None))


@keys_app.command("create")
def keys_create(
    name: str = typer.Argument(..., callback=_not_blank, help="Who or what the key is for."),
    role: RoleChoice = typer.Option(RoleChoice.viewer, help="What the key may do."),
    kb: list[str] = typer.Option(None, "--kb", callback=_kb_names,
                                 help="A KB the key may query (repeat); none: every KB."),
    expires_in_days: float = typer.Option(None, callback=_positive_days,
                                          help="Days until the key expires (> 0); default: never."),
    rate_limit_per_minute: float = typer.Option(None, min=0, help="Per-key override of QUIVR_RATE_LIMIT_PER_MINUTE (0: no limit)."),
    rate_limit_burst: int = typer.Option(None, min=1, help="Per-key override of QUIVR_RATE_LIMIT_BURST."),
    evaluation: bool = typer.Option(False, "--evaluation", help="Evaluation capability: search and ask "
                                    "with top_k up to 100 (other keys: 50)."),
):
    """Create an API key and print it once (only its hash is stored)."""
    from datetime import datetime, timedelta

    from quivr_pipelines.core import audit
    from quivr_pipelines.core.catalog import api_keys
    from quivr_pipelines.core.factory import open_database

    expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    db = open_database(_settings())
    try:
        key, raw = api_keys.create_key(db, name, RoleChoice(role).value, kb or None, expires,
                                       rate_limit_per_minute, rate_limit_burst, evaluation)
        audit.record(db, actor=audit.cli_actor(), action="keys.create", target=key.id, outcome="ok",
                     detail={"name": key.name, "role": key.role, "kbs": list(key.kbs) if key.kbs else "all",
                             "expires_at": key.expires_at, "rate_limit_per_minute": rate_limit_per_minute,
                             "rate_limit_burst": rate_limit_burst, "evaluation": evaluation})
    finally:
        db.close()
    typer.echo(f"created {key.id} ({key.role}{', evaluation' if key.evaluation else ''}, "
               f"KBs: {', '.join(key.kbs) if key.kbs else 'all'}, "
               f"expires: {key.expires_at.isoformat() if key.expires_at else 'never'})")
    typer.echo("key (shown once, store it now):", err=True)
    typer.echo(raw)


@keys_app.command("list")
def keys_list(as_json: bool = typer.Option(False, "--json")):
    """List API keys (never the keys themselves)."""
    from datetime import datetime

    from quivr_pipelines.core.catalog import api_keys
    from quivr_pipelines.core.factory import open_database
    from quivr_pipelines.core.keys import printable

    db = open_database(_settings())
    try:
        keys = api_keys.list_keys(db)
    finally:
        db.close()
    now = datetime.now(UTC)
    rows = [{"id": k.id, "name": k.name, "role": k.role, "kbs": list(k.kbs) if k.kbs else "all",
             "state": "revoked" if k.revoked_at else ("expired" if k.expires_at and k.expires_at <= now else "active"),
             "created_at": k.created_at.isoformat(), "expires_at": k.expires_at.isoformat() if k.expires_at else None,
             "evaluation": k.evaluation}
            for k in keys]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'id':<18}{'role':<8}{'state':<9}{'expires':<27}{'kbs':<24}name")
    for row in rows:
        kbs = row["kbs"] if isinstance(row["kbs"], str) else ",".join(row["kbs"])
        typer.echo(f"{row['id']:<18}{row['role']:<8}{row['state']:<9}{row['expires_at'] or 'never':<27}"
                   f"{kbs:<24}{printable(row['name'])}")


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key's id (from `keys list`).")):
    """Revoke an API key: its next request gets 401."""
    from quivr_pipelines.core import audit
    from quivr_pipelines.core.catalog import api_keys
    from quivr_pipelines.core.factory import open_database

    db = open_database(_settings())
    try:
        revoked = api_keys.revoke_key(db, key_id)
        audit.record(db, actor=audit.cli_actor(), action="keys.revoke", target=key_id,
                     outcome="ok" if revoked else "not_found")
    finally:
        db.close()
    if not revoked:
        typer.echo(f"no active key {key_id}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"revoked {key_id}")


@app.command()
def loadtest(
    url: str = typer.Option("http://127.0.0.1:8000", help="Base URL of the query service (http or https)."),
    kb: str = typer.Option(..., "--kb", help="Knowledge base to query."),
    api_key: str = typer.Option(None, help="API key (default: $QUIVR_LOADTEST_API_KEY); never printed.",
                                show_default=False),
    scenario: str = typer.Option("steady", help="steady, peak (ramp up, hold, ramp down) or mix."),
    concurrency: int = typer.Option(4, min=1, max=1000, help="Concurrent users (the peak for `peak`)."),
    requests: int = typer.Option(200, min=1, help="Stop after this many requests."),
    duration: float = typer.Option(60.0, min=0.1, max=86_400, help="Stop after this many seconds."),
    queries: Path = typer.Option(None, exists=True, dir_okay=False,
                                 help="Questions: text lines or JSONL (default: the shared XQuAD questions)."),
    weights: str = typer.Option(None, help="mix weights, e.g. search=5,complex=2,ask=2,stream=1."),
    top_k: int = typer.Option(5, min=1, max=50),
    mode: str = typer.Option("hybrid", help="hybrid, dense or sparse (simple searches)."),
    timeout: float = typer.Option(30.0, min=0.1, max=3600, help="Per-request timeout in seconds."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Load-test the query service: latency percentiles, throughput, errors by status."""
    from quivr_pipelines import loadtest as lt

    try:
        config = lt.LoadTestConfig(
            url=url, kb=kb, api_key=lt.api_key_from_env(api_key), scenario=scenario, concurrency=concurrency,
            requests=requests, duration=duration, timeout=timeout, top_k=top_k, mode=mode,
            weights=lt.parse_weights(weights), queries=lt.load_queries(queries))
        config.validate()
    except lt.LoadTestError as exc:
        raise typer.BadParameter(str(exc)) from None
    report = lt.run(config)
    typer.echo(json.dumps(report, indent=2) if as_json else lt.format_report(report))
    if not report["successes"]:
        raise typer.Exit(code=1)



# -- backups ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _backup_context(settings, restoring: bool = False):
    from quivr_pipelines.core.artifacts import build_artifact_store
    from quivr_pipelines.core.backups import crypto
    from quivr_pipelines.core.backups.backup_set import BackupContext, project_root
    from quivr_pipelines.core.factory import build_vector_store, open_database

    if settings.qdrant_url:
        _fail("backups of a Qdrant server's collections are not supported yet: take its snapshots with "
              "Qdrant's own API (the embedded engine is backed up here)")
    try:
        recipients = crypto.recipients_from_env(settings.backup_age_recipients)
        identity = settings.backup_age_identity.get_secret_value() if settings.backup_age_identity else None
        identities = crypto.identities_from_env(identity, settings.backup_age_identity_file) if restoring else []
    except ValueError as exc:
        _fail(str(exc))
    db, store = open_database(settings), build_vector_store(settings)
    try:
        yield BackupContext(db=db, vectors=store, artifacts=build_artifact_store(settings), recipients=recipients,
                            identities=identities, project_root=project_root(), environ=dict(os.environ),
                            say=lambda line: typer.echo(line, err=True))
    finally:
        store.close()
        db.close()


@app.command()
def backup(as_json: bool = typer.Option(False, "--json", help="Print the set's manifest as JSON.")):
    """Back up the catalog and every collection now, as one set in the artifact store
    (encrypted to QUIVR_BACKUP_AGE_RECIPIENTS when set)."""
    from quivr_pipelines.core.backups.backup_set import describe, dumps, take_backup_set

    settings = _settings()
    with _backup_context(settings) as ctx:
        try:
            manifest = take_backup_set(ctx)
        except Exception as exc:  # noqa: BLE001 - one line; the failed set is recorded in the store
            from quivr_pipelines.core.redaction import redact

            _fail(redact(f"backup failed: {type(exc).__name__}: {exc}"))
    if as_json:
        typer.echo(dumps(manifest.to_dict()))
        return
    line = describe(manifest)
    sizes = ", ".join(f"{name} {size / 1e6:.2f} MB" for name, size in line["components"].items())
    typer.echo(f"backup set {manifest.id}: {sizes}; {len(manifest.components['vectors']['collections'])} "
               f"collections; {'encrypted (age)' if manifest.encrypted else 'not encrypted'}; "
               f"writers waited {manifest.components['vectors'].get('writers_held_seconds', 0):.2f} s")


@backups_app.command("list")
def backups_list(as_json: bool = typer.Option(False, "--json")):
    """The backup sets, oldest first."""
    from quivr_pipelines.core.artifacts import build_artifact_store
    from quivr_pipelines.core.backups.backup_set import describe, dumps
    from quivr_pipelines.core.backups.sets import list_sets

    lines = [describe(s) for s in list_sets(build_artifact_store(_settings()))]
    if as_json:
        typer.echo(dumps({"sets": lines}))
        return
    if not lines:
        typer.echo("no backup sets yet (run `quivr-pipelines backup`)")
    for line in lines:
        sizes = " ".join(f"{name}={size / 1e6:.2f}MB" for name, size in line["components"].items())
        typer.echo(f"{line['id']}  {line['status']:<8}  {sizes}  {'age' if line['encrypted'] else 'plain'}  "
                   f"kbs={','.join(line['kbs']) or '-'}")


@backups_app.command("keygen")
def backups_keygen(identity_file: Path = typer.Argument(..., help="Where to write the private key (mode 0600).")):
    """Make an age key pair for encrypted backups: the private key goes to IDENTITY_FILE (keep it
    away from the backups; QUIVR_BACKUP_AGE_IDENTITY_FILE for a restore), the public key is printed
    (QUIVR_BACKUP_AGE_RECIPIENTS)."""
    from pyrage import x25519

    if identity_file.exists():
        _fail(f"{identity_file} exists: not overwritten")
    identity = x25519.Identity.generate()
    descriptor = os.open(identity_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(f"# quivr-pipelines backups; public key: {identity.to_public()}\n{identity}\n")
    typer.echo(str(identity.to_public()))


@backups_app.command("prune")
def backups_prune(dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be deleted.")):
    """Delete what is past its retention (QUIVR_BACKUP_KEEP_*_DAYS); the newest complete set stays."""
    from datetime import timedelta

    from quivr_pipelines.core.artifacts import build_artifact_store
    from quivr_pipelines.core.backups.sets import apply_retention, plan_retention

    settings = _settings()
    artifacts = build_artifact_store(settings)
    keep = {"catalog": timedelta(days=settings.backup_keep_catalog_days),
            "vectors": timedelta(days=settings.backup_keep_vectors_days),
            "config": timedelta(days=settings.backup_keep_config_days)}
    plan = plan_retention(artifacts, keep)
    for expiry in plan:
        what = expiry.component or "whole set"
        typer.echo(f"{'would delete' if dry_run else 'deleting'} {expiry.set_id} {what} "
                   f"({expiry.bytes / 1e6:.2f} MB): {expiry.reason}")
    freed = 0 if dry_run else apply_retention(artifacts, plan)
    total = sum(e.bytes for e in plan)
    typer.echo(f"{len(plan)} to delete, {total / 1e6:.2f} MB" + ("" if dry_run else f"; freed {freed / 1e6:.2f} MB"))


@app.command()
def restore(
    set_id: str = typer.Argument(..., help="The backup set (see `backups list`)."),
    target_schema: str = typer.Option(None, "--target-schema",
                                      help="The new schema of the catalog (default <schema>_r<set time>)."),
    collection_suffix: str = typer.Option(None, "--collection-suffix",
                                          help="Appended to each restored collection (default __r<set time>)."),
    only: str = typer.Option(None, "--only", help="catalog or vectors (default: both)."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Restore a backup set into new targets (never over live data): every file is checked
    against its checksum first, then row and point counts after."""
    from quivr_pipelines.core.backups.backup_set import BackupSetError, dumps, restore_set
    from quivr_pipelines.core.backups.catalog import BackupError
    from quivr_pipelines.core.backups.crypto import BackupKeyError
    from quivr_pipelines.core.backups.vectors import VectorBackupError

    if only not in (None, "catalog", "vectors"):
        raise typer.BadParameter("catalog or vectors", param_hint="--only")
    settings = _settings()
    with _backup_context(settings, restoring=True) as ctx:
        try:
            result = restore_set(ctx, set_id, target_schema=target_schema, collection_suffix=collection_suffix,
                                 components=(only,) if only else ("catalog", "vectors"))
        except (BackupSetError, BackupError, BackupKeyError, VectorBackupError, ValueError) as exc:
            _fail(str(exc))
    if as_json:
        typer.echo(dumps(result.as_dict()))
        return
    if result.schema:
        rows = sum(found or 0 for _, found in result.tables.values())
        typer.echo(f"catalog restored as schema {result.schema}: {len(result.tables)} tables, {rows} rows, "
                   "counts match the backup")
    for name, restored in result.collections.items():
        expected, found = result.points[restored]
        typer.echo(f"{name} restored as {restored}: {found} points (backup: {expected})")
    original = {restored: name for name, restored in result.collections.items()}
    for alias, collection in result.aliases.items():
        typer.echo(f"alias {alias} served {original[collection]} at the backup; its restored copy is {collection} "
                   "(the live alias was not changed)")

if __name__ == "__main__":
    app()
