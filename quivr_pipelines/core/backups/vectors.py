"""Vector backups of the embedded engine (qdrant-edge), which has no call that makes a snapshot.

A backup of a collection is its shard directory copied while the store is held after a flush
(`EmbeddedStore.copy_collection`: its writers wait behind its fence, readers only for the copy,
which keeps the files' holes), then archived outside the hold as a gzip'd tar whose members are
the shard's own files: `EdgeShard.unpack_snapshot(tar, target)` restores it too. The archive is
streamed to the caller's file object (an artifact) with its size and sha256 counted on the way.

The engine preallocates sparse 32 MB files, so a tar holds mostly zeros: gzip at level 1 turns a
206 MB tar of a 0.5 MB shard into 0.9 MB in 0.23 s, and a restore writes zeros back as holes.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import time
import uuid
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from qdrant_edge import CountRequest, EdgeShard

from quivr_pipelines.core.backups.streams import HashingWriter

FORMAT = "qdrant-edge-shard-tar-gz"
BLOCK = 1 << 20
ZERO = bytes(BLOCK)


class VectorBackupError(RuntimeError):
    """A vector backup or restore that cannot go on; the message says why, in one line."""


@dataclass(frozen=True)
class CollectionBackup:
    """One collection of a backup: what it held and the archive's size and checksum."""

    collection: str
    points: int
    dimensions: int
    fingerprint: str | None
    size: int
    sha256: str
    format: str = FORMAT
    seconds: float = 0.0
    held_seconds: float = 0.0  # how long its writers waited (the copy under the fence)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CollectionBackup:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class ShardCopy:
    """A collection's shard copied consistently into a staging folder, not yet archived."""

    collection: str
    path: Path
    points: int
    meta: dict
    held_seconds: float


def copy_collection(store, collection: str, staging: Path) -> ShardCopy:
    """The consistent copy (the short part: its writers wait for it). `staging` must be on the
    store's file system for the copy to keep holes cheaply; the caller removes it."""
    meta = store.collection_meta(collection)
    target = Path(tempfile.mkdtemp(prefix=".backup-", dir=staging)) / "shard"
    held = time.perf_counter()
    points = store.copy_collection(collection, target)
    return ShardCopy(collection, target, points, meta, time.perf_counter() - held)


def archive_copy(copy: ShardCopy, out: BinaryIO) -> CollectionBackup:
    """Stream the copy's archive to `out` (the long part, with nothing held)."""
    started = time.perf_counter()
    counting = HashingWriter(out)
    gz = _GzipWriter(counting)
    with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT, bufsize=BLOCK) as tar:
        for path in sorted(copy.path.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(copy.path)), recursive=False)
    gz.close()
    counting.flush()
    return CollectionBackup(collection=copy.collection, points=copy.points, dimensions=copy.meta["dimensions"],
                            fingerprint=copy.meta.get("embedding_fingerprint"), size=counting.size,
                            sha256=counting.digest.hexdigest(), seconds=copy.held_seconds + time.perf_counter() - started,
                            held_seconds=copy.held_seconds)


def backup_collection(store, collection: str, out: BinaryIO, staging: Path | None = None) -> CollectionBackup:
    """Copy `collection` (a real name, not an alias) consistently and stream its archive to `out`."""
    scratch = Path(tempfile.mkdtemp(prefix=".backup-", dir=staging or store.root))
    try:
        return archive_copy(copy_collection(store, collection, scratch), out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class _GzipWriter:
    """gzip at level 1 onto a stream (the `gzip` module needs a seekable file for nothing, but its
    level is fixed per file object; this keeps the stream write-only)."""

    def __init__(self, out):
        self.out = out
        self.zip = zlib.compressobj(1, zlib.DEFLATED, 31)

    def write(self, data) -> int:
        chunk = self.zip.compress(data)
        if chunk:
            self.out.write(chunk)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.out.write(self.zip.flush())


def verify_archive(src: BinaryIO, entry: CollectionBackup) -> None:
    """Read the whole archive and compare size and sha256 with `entry` before anything is restored."""
    digest, size = hashlib.sha256(), 0
    while chunk := src.read(BLOCK):
        digest.update(chunk)
        size += len(chunk)
    if size != entry.size or digest.hexdigest() != entry.sha256:
        raise VectorBackupError(
            f"archive of {entry.collection} fails its checksum (expected {entry.size} bytes, sha256 "
            f"{entry.sha256[:12]}…; got {size} bytes, {digest.hexdigest()[:12]}…): nothing was restored")


def restore_collection(store, src: BinaryIO, entry: CollectionBackup, target: str) -> int:
    """Restore `entry`'s archive (already verified) as the new collection `target` and return its
    point count, which must match the backup's. Zeros are written back as holes."""
    if target in store.list_collections():
        raise VectorBackupError(f"collection {target} already exists: restores go into new collections")
    scratch = Path(tempfile.mkdtemp(prefix=".restore-", dir=store.root))
    try:
        shard = scratch / f"shard-{uuid.uuid4().hex[:8]}"
        shard.mkdir()
        try:
            with tarfile.open(fileobj=src, mode="r|gz") as tar:
                for member in tar:
                    _extract(tar, member, shard)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise VectorBackupError(f"archive of {entry.collection} is not a readable shard tar ({exc})") from None
        try:
            loaded = EdgeShard.load(str(shard))
        except Exception as exc:  # noqa: BLE001 - the engine raises a bare Exception for a folder that is no shard
            raise VectorBackupError(f"archive of {entry.collection} holds no loadable shard ({exc})") from None
        try:
            points = loaded.count(CountRequest(exact=True))
        finally:
            loaded.close()
        if points != entry.points:
            raise VectorBackupError(f"restored {entry.collection} holds {points} points, its backup "
                                    f"{entry.points}: not adopted")
        store.adopt_collection(target, shard, {"dimensions": entry.dimensions,
                                               "embedding_fingerprint": entry.fingerprint})
        return points
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path) -> None:
    """One member under `root`: directories and regular files only, no path out of `root`; a file's
    zero blocks become holes."""
    name = Path(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise VectorBackupError(f"archive member {member.name!r} points outside the shard: refused")
    path = root / name
    if member.isdir():
        path.mkdir(parents=True, exist_ok=True)
        return
    if not member.isfile():
        raise VectorBackupError(f"archive member {member.name!r} is not a file or a folder: refused")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = tar.extractfile(member)
    with open(path, "wb") as out:
        while chunk := data.read(BLOCK):
            if chunk == ZERO[:len(chunk)]:
                out.seek(len(chunk), 1)
            else:
                out.write(chunk)
        out.truncate(member.size)
