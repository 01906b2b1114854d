"""Artifact storage (backups, reports): one interface, a local folder and S3 (boto3).

Separate from the document store on purpose: every top-level folder of the inbox (or of the
documents bucket prefix) becomes a knowledge base, so a backup written there would be ingested.
Settings refuse an artifacts location that overlaps the documents one (settings.py).

Both stores stream: nothing holds a whole artifact in memory (backups are gigabytes). A write
is all or nothing: the object appears only when `open_write`'s block exits without error (local:
a temporary file in the same folder, fsync, `os.replace`; S3: a multipart upload of bounded
parts, aborted on error; below one part, a single PUT). Keys are checked by
`keys.raw_key_problem`, the document store's rules, so the security checks stay in one place.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from quivr_pipelines.core.keys import raw_key_problem

if TYPE_CHECKING:
    from quivr_pipelines.settings import Settings

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
DEFAULT_PART_SIZE = 8 * MiB  # as boto3's TransferConfig: two such buffers at most in memory
COPY_CHUNK = 1 * MiB
TMP_SUFFIX = ".artifact-tmp"  # local temporary files: never listed, refused as key names


@dataclass(frozen=True)
class ArtifactInfo:
    key: str
    size: int
    modified: datetime  # UTC


class ArtifactNotFound(KeyError):
    """No artifact under that key; the message names its URI."""

    def __str__(self) -> str:  # KeyError would show the message quoted, as a repr
        return str(self.args[0]) if self.args else ""


class ArtifactStore(Protocol):
    def uri(self, key: str) -> str: ...

    def open_write(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A writable stream; the artifact appears only when the block exits without error."""

    def open_read(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A readable stream; ArtifactNotFound if there is no such artifact."""

    def put_file(self, key: str, path: Path) -> ArtifactInfo: ...

    def get_file(self, key: str, path: Path) -> ArtifactInfo:
        """Stream the artifact to `path`, which is replaced atomically (never left half written)."""

    def head(self, key: str) -> ArtifactInfo | None: ...

    def list(self, prefix: str = "") -> Iterator[ArtifactInfo]:
        """Artifacts whose key starts with `prefix` (a string prefix, as S3's), sorted by key."""

    def delete(self, key: str) -> None:
        """Idempotent: deleting a missing artifact is not an error."""

    def delete_prefix(self, prefix: str) -> int:
        """Delete every artifact under a non-empty `prefix`; returns how many were deleted."""


def check_artifact_key(key: str) -> str:
    """A '/'-separated relative name: the document store's key rules (no absolute path, no '.',
    '..' or empty segment, no control or invisible characters, at most 1024 UTF-8 bytes)."""
    if not isinstance(key, str):
        raise ValueError(f"artifact key must be a string, not {type(key).__name__}")
    problem = raw_key_problem(key)
    if problem is None and "\x00" in key:
        problem = "object key contains a NUL character"
    if problem is None and key.rsplit("/", 1)[-1].endswith(TMP_SUFFIX):
        problem = f"object key ends in {TMP_SUFFIX!r} (reserved for temporary files)"
    if problem is not None:
        raise ValueError(f"invalid artifact key {key!r}: {problem.replace('object key', 'key')}")
    return key


def check_artifact_prefix(prefix: str) -> str:
    """'' (everything), or the start of a valid key: 'backups/' and 'backups/2026-' both work."""
    if prefix:
        check_artifact_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def _check_delete_prefix(prefix: str) -> str:
    if not prefix:
        raise ValueError("delete_prefix needs a non-empty prefix (it would empty the whole store)")
    return check_artifact_prefix(prefix)


def _copy(src, dst) -> int:
    """Copy in bounded chunks; returns the number of bytes."""
    total = 0
    while chunk := src.read(COPY_CHUNK):
        dst.write(chunk)
        total += len(chunk)
    return total


@contextmanager
def _atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A temporary file next to `path` (mode 0600), fsynced and renamed over it on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); not possible on every platform."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class LocalArtifactStore:
    """A folder on disk (the embedded default). Every path is resolved and checked to stay under
    the root, so neither a hostile key nor a symbolic link inside the root writes elsewhere."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        check_artifact_key(key)
        path = self.root / key
        if not path.resolve().is_relative_to(self.root):
            raise ValueError(f"invalid artifact key {key!r}: resolves outside {self.root}")
        return path

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def open_write(self, key: str) -> AbstractContextManager[BinaryIO]:
        return _atomic_file(self._path(key))

    @contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        try:
            handle = open(path, "rb")  # noqa: SIM115 (closed below, after the caller's block)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ArtifactNotFound(f"no artifact at {path.as_uri()}") from None
        with handle:
            yield handle

    def put_file(self, key: str, path: Path) -> ArtifactInfo:
        with open(path, "rb") as src, self.open_write(key) as dst:
            _copy(src, dst)
        return self._info(key)

    def get_file(self, key: str, path: Path) -> ArtifactInfo:
        with self.open_read(key) as src:
            info = self._stat_info(key, os.fstat(src.fileno()))
            with _atomic_file(Path(path)) as dst:
                _copy(src, dst)
        return info

    def _info(self, key: str) -> ArtifactInfo:
        info = self.head(key)
        if info is None:
            raise ArtifactNotFound(f"no artifact at {self.uri(key)}")
        return info

    @staticmethod
    def _stat_info(key: str, st: os.stat_result) -> ArtifactInfo:
        return ArtifactInfo(key=key, size=st.st_size, modified=datetime.fromtimestamp(st.st_mtime, tz=UTC))

    def head(self, key: str) -> ArtifactInfo | None:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return self._stat_info(key, st) if stat.S_ISREG(st.st_mode) else None

    def list(self, prefix: str = "") -> Iterator[ArtifactInfo]:
        check_artifact_prefix(prefix)
        folder = prefix.rpartition("/")[0]
        base = self.root / folder if folder else self.root
        if not base.resolve().is_relative_to(self.root) or not base.is_dir():
            return
        found = []
        for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.endswith(TMP_SUFFIX):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix) and not (Path(dirpath) / name).is_symlink():
                    found.append(key)
            dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
        for key in sorted(found):
            if raw_key_problem(key) is not None:
                log.warning("file %r under %s is not a valid artifact key: not listed", key, self.root)
                continue
            info = self.head(key)
            if info is not None:
                yield info

    def delete(self, key: str) -> None:
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            path.unlink()
        parent = path.parent  # drop folders left empty, never the root
        while parent != self.root and parent.is_relative_to(self.root):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def delete_prefix(self, prefix: str) -> int:
        _check_delete_prefix(prefix)
        count = 0
        for info in list(self.list(prefix)):
            self.delete(info.key)
            count += 1
        return count


def _is_missing(exc) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


class _MultipartWriter(io.RawIOBase):
    """Buffers at most one part; a part is uploaded as soon as it is full. `finish` completes
    the upload (or PUTs a small object in one request), `abort` discards every uploaded part.
    The bytearray goes to botocore as it is: `bytes(buffer)` would hold each part twice.

    Checksums as boto3's own `upload_fileobj` (s3transfer) sends them: with botocore's default
    `request_checksum_calculation=when_supported`, CRC32 declared at creation, sent with each part
    and repeated per part on completion (S3 refuses a completion that omits them)."""

    def __init__(self, client, bucket: str, key: str, extra: dict, part_size: int):
        self.client, self.bucket, self.key, self.extra = client, bucket, key, extra
        calculation = getattr(client.meta.config, "request_checksum_calculation", None)
        self.checksum = {"ChecksumAlgorithm": "CRC32"} if calculation == "when_supported" else {}
        self.part_size = part_size
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict] = []
        self.written = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.written

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        while len(view):
            room = self.part_size - len(self.buffer)
            self.buffer += view[:room]
            view = view[room:]
            if len(self.buffer) >= self.part_size:
                self._upload_part()
        self.written += size
        return size

    def _upload_part(self) -> None:
        if self.upload_id is None:
            resp = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key,
                                                       **self.extra, **self.checksum)
            self.upload_id = resp["UploadId"]
        number = len(self.parts) + 1
        resp = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                       PartNumber=number, Body=self.buffer, **self.checksum)
        part = {"ETag": resp["ETag"], "PartNumber": number}
        if self.checksum and "ChecksumCRC32" in resp:
            part["ChecksumCRC32"] = resp["ChecksumCRC32"]
        self.parts.append(part)
        self.buffer = bytearray()

    def finish(self) -> None:
        if self.upload_id is None:  # below one part: a single PUT
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self.buffer, **self.extra)
            self.buffer = bytearray()
            return
        if self.buffer:
            self._upload_part()
        self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                              MultipartUpload={"Parts": self.parts})

    def abort(self) -> None:
        self.buffer = bytearray()
        if self.upload_id is not None:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)


class S3ArtifactStore:
    """S3 or an S3-compatible server. `sse` ('AES256', 'aws:kms') and `sse_kms_key_id` are sent
    with every write. Parts are `part_size` bytes (at least 5 MiB, S3's minimum)."""

    def __init__(self, client, bucket: str, prefix: str = "", sse: str | None = None,
                 sse_kms_key_id: str | None = None, *, part_size: int = DEFAULT_PART_SIZE):
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size {part_size} is below S3's minimum of {MIN_PART_SIZE} bytes")
        if sse_kms_key_id and not (sse or "").startswith("aws:kms"):
            raise ValueError("sse_kms_key_id needs sse='aws:kms' (or 'aws:kms:dsse')")
        if prefix.strip("/"):
            check_artifact_key(prefix.strip("/"))
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.part_size = part_size
        self.extra = {"ServerSideEncryption": sse} if sse else {}
        if sse_kms_key_id:
            self.extra["SSEKMSKeyId"] = sse_kms_key_id

    def _full(self, key: str) -> str:
        return self.prefix + check_artifact_key(key)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"

    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        writer = _MultipartWriter(self.client, self.bucket, self._full(key), self.extra, self.part_size)
        try:
            yield writer  # type: ignore[misc]  (a RawIOBase: write, tell, writable)
            writer.finish()
        except BaseException:
            try:
                writer.abort()
            except Exception:  # the original error matters more; S3 lifecycle rules clean up
                log.exception("could not abort the multipart upload of %s", self.uri(key))
            raise

    @contextmanager
    def open_read(self, key: str) -> Iterator[BinaryIO]:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if _is_missing(exc):
                raise ArtifactNotFound(f"no artifact at {self.uri(key)}") from None
            raise
        body = resp["Body"]
        try:
            yield body
        finally:
            body.close()

    def put_file(self, key: str, path: Path) -> ArtifactInfo:
        with open(path, "rb") as src, self.open_write(key) as dst:
            _copy(src, dst)
        info = self.head(key)
        if info is None:
            raise ArtifactNotFound(f"no artifact at {self.uri(key)} right after writing it")
        return info

    def get_file(self, key: str, path: Path) -> ArtifactInfo:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if _is_missing(exc):
                raise ArtifactNotFound(f"no artifact at {self.uri(key)}") from None
            raise
        body = resp["Body"]
        try:
            with _atomic_file(Path(path)) as dst:
                _copy(body, dst)
        finally:
            body.close()
        return ArtifactInfo(key=key, size=resp["ContentLength"], modified=resp["LastModified"].astimezone(UTC))

    def head(self, key: str) -> ArtifactInfo | None:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise
        return ArtifactInfo(key=key, size=resp["ContentLength"], modified=resp["LastModified"].astimezone(UTC))

    def list(self, prefix: str = "") -> Iterator[ArtifactInfo]:
        check_artifact_prefix(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"][len(self.prefix):]
                if key.endswith("/"):
                    continue  # a folder marker
                if raw_key_problem(key) is not None:
                    log.warning("object %r in s3://%s is not a valid artifact key: not listed", key, self.bucket)
                    continue
                yield ArtifactInfo(key=key, size=obj["Size"], modified=obj["LastModified"].astimezone(UTC))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._full(key))  # S3: no error if missing

    def delete_prefix(self, prefix: str) -> int:
        _check_delete_prefix(prefix)
        count = 0
        batch: list[dict] = []
        for info in self.list(prefix):
            batch.append({"Key": self.prefix + info.key})
            if len(batch) == 1000:  # DeleteObjects' limit
                count += self._delete_batch(batch)
                batch = []
        if batch:
            count += self._delete_batch(batch)
        return count

    def _delete_batch(self, batch: list[dict]) -> int:
        resp = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        errors = resp.get("Errors", [])
        if errors:
            first = errors[0]
            raise OSError(f"could not delete {len(errors)} artifacts in s3://{self.bucket}, "
                          f"first {first.get('Key')!r}: {first.get('Code')} {first.get('Message')}")
        return len(batch)


def build_artifact_store(settings: Settings) -> ArtifactStore:
    """QUIVR_ARTIFACTS_URI: `s3://bucket/prefix` (the documents' S3 endpoint, region and
    credentials), or a folder (default `<QUIVR_DATA_DIR>/artifacts`)."""
    location = settings.artifacts_s3
    if location is not None:
        import boto3
        from botocore.config import Config

        bucket, prefix = location
        client = boto3.client("s3", region_name=settings.s3_region, endpoint_url=settings.s3_endpoint_url,
                              config=Config(retries={"max_attempts": 8, "mode": "adaptive"}))
        return S3ArtifactStore(client, bucket, prefix, sse=settings.artifacts_s3_sse,
                               sse_kms_key_id=settings.artifacts_s3_kms_key_id)
    root = settings.artifacts_dir
    assert root is not None
    root.mkdir(parents=True, exist_ok=True)
    return LocalArtifactStore(root)


__all__ = [
    "ArtifactInfo",
    "ArtifactNotFound",
    "ArtifactStore",
    "LocalArtifactStore",
    "S3ArtifactStore",
    "build_artifact_store",
    "check_artifact_key",
]
