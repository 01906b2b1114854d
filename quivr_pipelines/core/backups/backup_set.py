"""One backup set: the catalog, every collection and the configuration, taken together.

Consistency between the catalog and the vectors: every KB's write lock is taken exclusively (the
ingestion batches, prune and swaps take it too, so none is half done), the collections are copied
(a file copy each, under the store's fence), then the catalog's snapshot is exported, and the
locks are released. pg_dump then runs in that snapshot and the copies are archived, with nothing
held: writers wait only for the copies and the snapshot.

Files go to the artifact store under `backups/<set id>/`, encrypted to the age recipients when
some are configured; the manifest, written last, lists each file's size and sha256 as stored (a
restore checks them before it writes anything), the aliases and the generation each KB served.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from quivr_pipelines.core import generations
from quivr_pipelines.core.backups import catalog as catalog_backup
from quivr_pipelines.core.backups import crypto
from quivr_pipelines.core.backups import vectors as vector_backup
from quivr_pipelines.core.backups.sets import (
    COMPLETE,
    FAILED,
    SetManifest,
    list_sets,
    new_set_id,
    read_manifest,
    set_prefix,
    write_manifest,
)
from quivr_pipelines.core.backups.streams import HashingWriter, file_sha256
from quivr_pipelines.core.catalog import repository

log = logging.getLogger(__name__)

LOCK_TIMEOUT_SECONDS = 120
CHUNK = 1 << 20


class BackupSetError(RuntimeError):
    """A backup set that could not be taken or restored; one line, no secret."""


@dataclass
class BackupContext:
    db: object  # Database (its dsn and schema are dumped)
    vectors: object  # EmbeddedStore
    artifacts: object  # ArtifactStore
    recipients: list = field(default_factory=list)  # age recipients; empty: not encrypted
    identities: list = field(default_factory=list)  # age identities (restore only)
    project_root: Path | None = None  # the configuration component; None: not taken
    environ: dict[str, str] = field(default_factory=dict)
    staging: Path | None = None  # scratch space on the vector store's disk; None: beside it
    say: Callable[[str], None] = log.info


def project_root(start: Path | None = None) -> Path | None:
    """The deployment's configuration folder for the `config` component: the working directory
    when it holds dagster.yaml or workspace.yaml (where `dagster dev` and the CLI run), else None."""
    root = Path(start or Path.cwd())
    return root if any((root / name).is_file() for name in ("dagster.yaml", "workspace.yaml")) else None


def _store(ctx: BackupContext, key: str, path: Path) -> dict:
    """Upload a staged file (encrypted when recipients are set); its entry for the manifest."""
    with path.open("rb") as src, ctx.artifacts.open_write(key) as out:
        hashing = HashingWriter(out)
        if ctx.recipients:
            crypto.encrypt_stream(src, hashing, ctx.recipients)
        else:
            shutil.copyfileobj(src, hashing, CHUNK)
    return {"key": key, "size": hashing.size, "sha256": hashing.digest.hexdigest(),
            "plain_size": path.stat().st_size, "encrypted": bool(ctx.recipients)}


def take_backup_set(ctx: BackupContext, set_id: str | None = None) -> SetManifest:
    """Take a set (see the module docstring). A failure is recorded as a failed set and raised."""
    set_id = set_id or new_set_id()
    prefix = set_prefix(set_id)
    manifest = SetManifest(id=set_id, created_at=datetime.now(UTC), encrypted=bool(ctx.recipients))
    staging_root = ctx.staging or ctx.vectors.root
    scratch = Path(tempfile.mkdtemp(prefix=".backup-set-", dir=staging_root))
    try:
        kbs = repository.kb_names(ctx.db)
        copies: list[vector_backup.ShardCopy] = []
        waited = {}
        dump = scratch / "catalog.dump"
        locks = contextlib.ExitStack()
        lock_started = time.perf_counter()
        locks.enter_context(generations.kb_write_locks(ctx.db, kbs, exclusive=True,
                                                       timeout_seconds=LOCK_TIMEOUT_SECONDS))
        try:
            manifest.aliases = dict(ctx.vectors.aliases())
            for kb in kbs:
                serving = generations.serving(ctx.db, kb)
                if serving is not None:
                    manifest.generations[kb] = serving.generation
            for name in ctx.vectors.list_collections():
                copies.append(vector_backup.copy_collection(ctx.vectors, name, scratch))

            def release() -> None:  # the catalog's snapshot is taken: writers may go on
                waited["writers_held_seconds"] = round(time.perf_counter() - lock_started, 3)
                locks.close()

            catalog = catalog_backup.backup_catalog(ctx.db.dsn, ctx.db.schema, dump, backup_id=set_id,
                                                    on_snapshot=release)
        finally:
            locks.close()
        ctx.say(f"{set_id}: {len(copies)} collections copied and the catalog snapshot taken; writers "
                f"waited {waited.get('writers_held_seconds', 0):.2f} s")
        manifest.components["catalog"] = {**catalog.to_dict(), "files": [_store(ctx, prefix + "catalog.dump", dump)]}
        dump.unlink()
        entries, files = [], []
        for copy in copies:
            archive = scratch / f"{copy.collection}.tar.gz"
            with archive.open("wb") as out:
                entry = vector_backup.archive_copy(copy, out)
            shutil.rmtree(copy.path.parent, ignore_errors=True)
            files.append(_store(ctx, f"{prefix}vectors/{copy.collection}.tar.gz", archive))
            archive.unlink()
            entries.append(entry.to_dict())
        manifest.components["vectors"] = {"collections": entries, "files": files, **waited}
        if ctx.project_root is not None:
            from quivr_pipelines.core.backups import config as config_backup

            tar = scratch / "config.tar.gz"
            with tar.open("wb") as out:
                config = config_backup.collect_configuration(ctx.project_root, ctx.environ, out)
            described = config.to_dict()  # its "files" are the tar's members; the set's "files" what is stored
            manifest.components["config"] = {**{k: v for k, v in described.items() if k != "files"},
                                             "members": described.get("files", []),
                                             "files": [_store(ctx, prefix + "config.tar.gz", tar)]}
        manifest.status = COMPLETE
        write_manifest(ctx.artifacts, manifest)
        return manifest
    except Exception as exc:
        manifest.status = FAILED
        manifest.errors.append(f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):
            write_manifest(ctx.artifacts, manifest)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- restore ---------------------------------------------------------------------------------------
@dataclass
class RestoreResult:
    set_id: str
    schema: str | None = None
    tables: dict = field(default_factory=dict)  # table -> (expected, found)
    collections: dict[str, str] = field(default_factory=dict)  # backed-up name -> restored name
    points: dict[str, tuple[int, int]] = field(default_factory=dict)  # restored name -> (expected, found)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> restored collection it would serve
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"set_id": self.set_id, "schema": self.schema, "tables": self.tables,
                "collections": self.collections, "points": self.points, "aliases": self.aliases,
                "seconds": round(self.seconds, 3)}


def _fetch(ctx: BackupContext, entry: dict, target: Path) -> Path:
    """Download a file of the set, check it against its manifest entry, decrypt it: the plain file."""
    stored = target.with_name(target.name + ".stored")
    digest, size = hashlib.sha256(), 0
    with ctx.artifacts.open_read(entry["key"]) as src, stored.open("wb") as out:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    if size != entry["size"] or digest.hexdigest() != entry["sha256"]:
        stored.unlink()
        raise BackupSetError(f"{ctx.artifacts.uri(entry['key'])} fails its checksum (expected {entry['size']} "
                             f"bytes, sha256 {entry['sha256'][:12]}…; got {size} bytes, "
                             f"{digest.hexdigest()[:12]}…): nothing was restored")
    if entry.get("encrypted"):
        with stored.open("rb") as src, target.open("wb") as out:
            crypto.decrypt_stream(src, out, ctx.identities, name=entry["key"])
        stored.unlink()
    else:
        stored.rename(target)
    return target


def restore_set(ctx: BackupContext, set_id: str, *, target_schema: str | None = None,
                collection_suffix: str | None = None, components: tuple[str, ...] = ("catalog", "vectors"),
                ) -> RestoreResult:
    """Restore a set into new targets: the catalog as `target_schema` (default
    `<schema>_r<set time>`), each collection as `<name><collection_suffix>` (default `__r<set
    time>`). Every file is downloaded and checked first: a damaged set restores nothing. Counts
    are compared after: the catalog's rows per table, each collection's points."""
    started = time.perf_counter()
    try:
        manifest = read_manifest(ctx.artifacts, set_id)
    except KeyError:
        known = [s.id for s in list_sets(ctx.artifacts)][-3:]
        raise BackupSetError(f"no backup set {set_id}" + (f" (latest: {', '.join(known)})" if known else "")) from None
    if manifest.status != COMPLETE:
        raise BackupSetError(f"backup set {set_id} is {manifest.status}: {'; '.join(manifest.errors) or 'unfinished'}")
    stamp = set_id.split("-", 1)[0].lower()
    target_schema = target_schema or f"{ctx.db.schema}_r{stamp}"
    suffix = collection_suffix if collection_suffix is not None else f"__r{stamp}"
    result = RestoreResult(set_id=set_id)
    scratch = Path(tempfile.mkdtemp(prefix=".restore-set-", dir=ctx.staging or ctx.vectors.root))
    try:
        wanted = [c for c in components if c in manifest.live_components()]
        missing = [c for c in components if c not in wanted]
        if missing:
            raise BackupSetError(f"backup set {set_id} has no {', '.join(missing)} (expired or never taken)")
        vector_part = manifest.components.get("vectors", {})
        entries = {e["collection"]: vector_backup.CollectionBackup.from_dict(e)
                   for e in vector_part.get("collections", [])}
        if "vectors" in wanted:
            from quivr_pipelines.core.vectorstore.embedded import COLLECTION_NAME

            bad = sorted(n + suffix for n in entries if not COLLECTION_NAME.match(n + suffix))
            if bad:
                raise BackupSetError(f"--collection-suffix {suffix!r} makes invalid collection names ({bad[0]}: "
                                     "letters, digits, '_' and '-', at most 200); nothing was restored")
            existing = set(ctx.vectors.list_collections())
            clashes = sorted(n + suffix for n in entries if n + suffix in existing)
            if clashes:
                raise BackupSetError(f"collections {', '.join(clashes)} exist already: choose another "
                                     "--collection-suffix; nothing was restored")
        fetched: dict[str, Path] = {}  # every file first: a damaged one stops the restore here
        for name in wanted:
            for n, entry in enumerate(manifest.components[name]["files"]):
                fetched[entry["key"]] = _fetch(ctx, entry, scratch / f"{name}-{n}")
        if "catalog" in wanted:
            part = manifest.components["catalog"]
            report = catalog_backup.restore_catalog(
                ctx.db.dsn, fetched[part["files"][0]["key"]],
                catalog_backup.CatalogManifest.from_dict(
                    {**{k: v for k, v in part.items() if k != "files"},
                     "size": part["files"][0]["plain_size"], "sha256": file_sha256(fetched[part["files"][0]["key"]])}),
                target_schema=target_schema)
            result.schema, result.tables = report.schema, report.tables
        if "vectors" in wanted:
            for file in vector_part["files"]:
                name = Path(file["key"]).name.removesuffix(".tar.gz")
                entry = entries[name]
                plain = fetched[file["key"]]
                entry = vector_backup.CollectionBackup(**{**entry.to_dict(), "size": plain.stat().st_size,
                                                          "sha256": file_sha256(plain)})
                with plain.open("rb") as src:
                    found = vector_backup.restore_collection(ctx.vectors, src, entry, name + suffix)
                plain.unlink()
                result.collections[name] = name + suffix
                result.points[name + suffix] = (entry.points, found)
            result.aliases = {alias: result.collections[c] for alias, c in manifest.aliases.items()
                              if c in result.collections}
        result.seconds = time.perf_counter() - started
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def describe(manifest: SetManifest) -> dict:
    """A line of `backups list`: id, time, status, components and their stored sizes."""
    sizes = {name: sum(f["size"] for f in part.get("files", [])) for name, part in manifest.components.items()
             if not part.get("expired_at")}
    return {"id": manifest.id, "created_at": manifest.created_at.isoformat(timespec="seconds"),
            "status": manifest.status, "components": sizes, "encrypted": manifest.encrypted,
            "kbs": sorted(manifest.generations), "errors": manifest.errors}


def dumps(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=True, default=str)
