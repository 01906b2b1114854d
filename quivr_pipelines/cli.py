"""`quivr-pipelines`: add documents to a KB, ingest them through Dagster, show status, search."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from tqdm import tqdm

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Ingestion and operations for RAG knowledge bases (Dagster + Qdrant).")
kb_app = typer.Typer(no_args_is_help=True, help="Knowledge base settings.")
app.add_typer(kb_app, name="kb")


def _settings():
    from quivr_pipelines.settings import get_settings

    return get_settings()


@app.command()
def add(
    kb: str = typer.Argument(..., help="Knowledge base name (a-z, 0-9, '-', '_')."),
    paths: list[Path] = typer.Argument(..., exists=True, help="Files or folders to add."),
    prefix: str = typer.Option("", help="Key prefix inside the KB, e.g. 'contracts/2024'."),
):
    """Copy local files or folders into a KB's object store (the local inbox or S3)."""
    from quivr_pipelines.core.errors import IngestionError
    from quivr_pipelines.core.factory import build_object_store
    from quivr_pipelines.core.keys import validate_kb_name

    validate_kb_name(kb)
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
):
    """Create a KB or change its chunk sizes (applies to documents ingested from now on;
    use `ingest --kb KB --force` to re-chunk existing ones)."""
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
            chunk_combine_under_characters=combine_under, chunk_overlap_characters=overlap)
    finally:
        db.close()
    typer.echo(json.dumps(config.__dict__, indent=2))


@kb_app.command("show")
def kb_show(kb: str = typer.Argument(...)):
    """Show a KB's chunk sizes, collection and embedding model."""
    from quivr_pipelines.core.catalog import repository
    from quivr_pipelines.core.factory import open_database

    db = open_database(_settings())
    try:
        typer.echo(json.dumps(repository.get_kb(db, kb).__dict__, indent=2))
    except KeyError:
        typer.echo(f"no knowledge base named {kb!r}", err=True)
        raise typer.Exit(code=1)
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
    kb: str = typer.Option(None, "--kb", help="Show failures of this KB."),
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
    if as_json:
        typer.echo(json.dumps({"kbs": rows, "failures": problems}, indent=2, default=str))
        return
    header = f"{'kb':<24}{'ingested':>9}{'failed':>8}{'skipped':>8}{'deleted':>8}{'pending':>8}{'chunks':>9}  last ingestion"
    typer.echo(header)
    for row in rows:
        if kb and row["kb"] != kb:
            continue
        last = row["last_ingestion"].isoformat(timespec="seconds") if row["last_ingestion"] else "-"
        typer.echo(f"{row['kb']:<24}{row['ingested']:>9}{row['failed']:>8}{row['skipped']:>8}"
                   f"{row['deleted']:>8}{row['pending']:>8}{row['chunks']:>9}  {last}")
    for problem in problems:
        typer.echo(f"  {problem['status']:<8} {problem['object_key']}: {problem['error_type']}: {problem['failure_reason']}")


@app.command()
def search(
    kb: str = typer.Argument(...),
    query: str = typer.Argument(...),
    top_k: int = typer.Option(5, min=1, max=50),
    mode: str = typer.Option("hybrid", help="hybrid, dense or sparse"),
):
    """Search a KB from the command line (the query service offers the same over HTTP)."""
    from quivr_pipelines.core.retrieval import search_kb

    for hit in search_kb(_settings(), kb, query, top_k=top_k, mode=mode):
        page = f" p.{hit.payload.get('page_number')}" if hit.payload.get("page_number") else ""
        text = " ".join(hit.payload.get("text", "").split())[:200]
        typer.echo(f"{hit.score:.4f}  {hit.payload.get('document_key')}{page}\n        {text}")


@app.command()
def demo(
    serve_ui: bool = typer.Option(False, "--ui", help="Then start `dagster dev` (UI on :3000)."),
):
    """Seed sample documents into the 'demo' KB, ingest them through Dagster, and search."""
    from quivr_pipelines.core.factory import build_object_store
    from quivr_pipelines.runner import ingest_now

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
    search("demo", "how are deleted documents handled?", top_k=3, mode="hybrid")
    typer.echo("\nstatus:")
    status(kb="demo", as_json=False)
    home = os.environ.get("DAGSTER_HOME", "the current folder (dagster.yaml)")
    typer.echo(f"\nDagster runs were recorded in {home}. See them with: dagster dev  (http://127.0.0.1:3000)")
    if serve_ui:
        os.execvp("dagster", ["dagster", "dev", "-m", "quivr_pipelines.definitions"])


if __name__ == "__main__":
    app()
