"""Object storage: one interface, a local folder (the embedded default) and S3 (boto3).

Layout in both: `<root>/<kb>/<object key>`. A KB is the first path segment. The store is
read-only for ingestion; only `put` (used by the CLI to add files) writes.

Keys of any bytes: both stores list every object, in key byte order, under its escaped name
(`keys.escape_key`: the name itself unless it holds undecodable bytes, control, bidi or
invisible characters), and say in `ObjectInfo.refused` why an object will not be read (a hostile
name, a symbolic link, a hard link, a special file). The sync records those as `hostile_key`
without reading them; the other objects of the KB are ingested as usual.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from quivr_pipelines.core.content_types import content_type_for
from quivr_pipelines.core.errors import ErrorType, IngestionError
from quivr_pipelines.core.keys import (
    check_object_key,
    escape_key,
    is_escaped,
    key_bytes,
    raw_key_problem,
    unescape_key,
    validate_kb_name,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectInfo:
    kb: str
    key: str
    size: int
    etag: str
    last_modified: datetime
    version_id: str | None = None
    content_type: str | None = None
    # Why the store will not read this object (recorded as hostile_key), or None.
    refused: str | None = None

    @property
    def version(self) -> str:
        return self.version_id or self.etag


@dataclass(frozen=True)
class ObjectContent:
    info: ObjectInfo
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class ObjectStore(Protocol):
    def list_kbs(self) -> list[str]: ...

    def list_objects(self, kb: str, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Objects of a KB in lexicographic key order (as S3 lists them), after `start_after`."""

    def head(self, kb: str, key: str) -> ObjectInfo | None: ...

    def read(self, kb: str, key: str, max_bytes: int) -> ObjectContent: ...

    def put(self, kb: str, key: str, data: bytes) -> ObjectInfo: ...

    def uri(self, kb: str, key: str) -> str: ...


def _too_large(info: ObjectInfo, max_bytes: int) -> IngestionError:
    return IngestionError(
        ErrorType.TOO_LARGE,
        f"{info.size} bytes is larger than MAX_UPLOAD_SIZE_MB ({max_bytes / 1024 / 1024:g} MB)",
    )


class LocalFolderStore:
    """A folder on disk. Keys never leave the root: hostile keys are refused before any I/O.

    Links are never followed. A symbolic link (to a file or a folder, inside the KB or not) is
    listed as refused: its target can be anywhere and can change after any check. A KB folder
    that is a link, or resolves outside the root, is not walked at all. Reads open each path
    component with O_NOFOLLOW relative to its parent, so a link swapped in after listing is
    refused too. Special files (FIFOs, devices, sockets) are refused: reading one can block.

    Hard links: a regular file with st_nlink > 1 has another name somewhere on the same
    filesystem, and nothing tells where: it may be `/etc/shadow` linked into the inbox by anyone
    allowed to write there. Such files are refused unless `allow_hardlinks`
    (QUIVR_LOCAL_ALLOW_HARDLINKS) says the inbox is fed by tools that hard-link on purpose
    (rsync --link-dest, cp -l, deduplicating backups).
    """

    def __init__(self, root: Path, allow_hardlinks: bool = False):
        self.root = Path(root).resolve()
        self.allow_hardlinks = allow_hardlinks

    def _kb_root(self, kb: str) -> Path | None:
        """The KB folder, or None when it is a link or resolves elsewhere (never walked)."""
        validate_kb_name(kb)
        kb_root = self.root / kb
        if kb_root.is_symlink() or (kb_root.exists() and kb_root.resolve() != kb_root):
            log.warning("knowledge base folder %s is a symbolic link or resolves outside %s: not walked",
                        kb_root, self.root)
            return None
        return kb_root

    def _path(self, kb: str, key: str) -> Path:
        check_object_key(key)
        kb_root = self._kb_root(kb)
        path = (self.root / kb / key).resolve()
        if kb_root is None or not path.is_relative_to(kb_root):
            raise IngestionError(ErrorType.HOSTILE_KEY, "object key resolves outside the knowledge base folder")
        if path != self.root / kb / key:
            raise IngestionError(ErrorType.HOSTILE_KEY, "object key passes through a symbolic link")
        return path

    def list_kbs(self) -> list[str]:
        if not self.root.exists():
            return []
        kbs = []
        for entry in os.scandir(self.root):
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                kbs.append(validate_kb_name(entry.name))
            except ValueError:
                log.warning("folder %r under %s is not a valid knowledge base name: ignored",
                            escape_key(entry.name), self.root)
        return sorted(kbs)

    def list_objects(self, kb: str, start_after: str | None = None) -> Iterator[ObjectInfo]:
        kb_root = self._kb_root(kb)
        if kb_root is None or not kb_root.is_dir():
            return
        entries = []  # (raw relative name, path); os.walk hands undecodable bytes as surrogates
        for dirpath, dirnames, filenames in os.walk(kb_root, followlinks=False):
            rel_dir = os.path.relpath(dirpath, kb_root)
            for name in dirnames:
                if (Path(dirpath) / name).is_symlink() and not name.startswith("."):
                    filenames.append(name)  # listed (as refused), never descended
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and not (Path(dirpath) / d).is_symlink()]
            for name in filenames:
                if name.startswith("."):
                    continue
                raw = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                entries.append((raw, Path(dirpath) / name))
        entries.sort(key=lambda entry: key_bytes(entry[0]))
        after = key_bytes(unescape_key(start_after)) if start_after is not None else None
        for raw, path in entries:
            if after is not None and key_bytes(raw) <= after:
                continue
            info = self._stat(kb, raw, path)
            if info is not None:
                yield info

    def _refusal(self, st: os.stat_result) -> str | None:
        if stat.S_ISLNK(st.st_mode):
            return "symbolic link: links are not followed (the target may be outside the store)"
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file (a FIFO, device or socket): not read"
        if st.st_nlink > 1 and not self.allow_hardlinks:
            return (f"hard link ({st.st_nlink} names): its other names may be outside the store "
                    "(QUIVR_LOCAL_ALLOW_HARDLINKS=true allows them)")
        return None

    def _stat(self, kb: str, raw: str, path: Path) -> ObjectInfo | None:
        """What listing and HEAD say about `raw` (a raw relative name): None if it is gone."""
        try:
            st = path.lstat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISDIR(st.st_mode):
            return None
        key = escape_key(raw)
        return ObjectInfo(
            kb=kb,
            key=key,
            size=st.st_size,
            etag=f"{st.st_mtime_ns:x}-{st.st_size:x}",
            last_modified=datetime.fromtimestamp(st.st_mtime, tz=UTC),
            content_type=content_type_for(key),
            refused=raw_key_problem(raw) or self._refusal(st),
        )

    def head(self, kb: str, key: str) -> ObjectInfo | None:
        """What the listing would say of `key` (refused links included), or None if it is gone.
        An escaped key is looked up under its raw name, so the prune never takes a refused
        object that is still there for a deleted one."""
        raw = unescape_key(key) if is_escaped(key) else check_object_key(key)
        kb_root = self._kb_root(kb)
        if kb_root is None or raw.startswith("/") or any(p in ("", ".", "..") for p in raw.split("/")):
            return None  # never look up a name that could climb out of the KB
        path = kb_root / raw
        if path.parent.resolve() != path.parent:
            return None  # behind a linked folder: not in the KB under this name
        return self._stat(kb, raw, path)

    def _open(self, kb: str, key: str) -> int:
        """A read-only descriptor of the KB's regular file `key`, opened component by component
        with O_NOFOLLOW: no symbolic link anywhere on the way, even one swapped in just now."""
        self._path(kb, key)
        *folders, name = key.split("/")
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.root / kb, flags | getattr(os, "O_DIRECTORY", 0))
        try:
            for folder in folders:
                child = os.open(folder, flags | getattr(os, "O_DIRECTORY", 0), dir_fd=fd)
                os.close(fd)
                fd = child
            return os.open(name, flags | getattr(os, "O_NONBLOCK", 0), dir_fd=fd)
        finally:
            os.close(fd)

    def read(self, kb: str, key: str, max_bytes: int) -> ObjectContent:
        try:
            fd = self._open(kb, key)
        except (FileNotFoundError, NotADirectoryError):
            raise IngestionError(ErrorType.NOT_FOUND, "object no longer exists in the store") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK):
                raise IngestionError(ErrorType.HOSTILE_KEY, "symbolic link: links are not followed "
                                     "(the target may be outside the store)") from None
            raise
        with open(fd, "rb") as handle:  # read-only: the source is never modified
            st = os.fstat(handle.fileno())
            refused = self._refusal(st)
            if refused:
                raise IngestionError(ErrorType.HOSTILE_KEY, refused)
            info = ObjectInfo(kb=kb, key=key, size=st.st_size, etag=f"{st.st_mtime_ns:x}-{st.st_size:x}",
                              last_modified=datetime.fromtimestamp(st.st_mtime, tz=UTC),
                              content_type=content_type_for(key))
            if info.size > max_bytes:
                raise _too_large(info, max_bytes)
            data = handle.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise _too_large(info, max_bytes)
        return ObjectContent(info=info, data=data)

    def put(self, kb: str, key: str, data: bytes) -> ObjectInfo:
        path = self._path(kb, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        info = self._stat(kb, key, path)
        assert info is not None
        return info

    def uri(self, kb: str, key: str) -> str:
        return (self.root / kb / key).as_uri()


class S3Store:
    """S3 or an S3-compatible server (MinIO, R2, moto). Credentials come from the AWS chain."""

    def __init__(self, bucket: str, prefix: str = "", region: str | None = None,
                 endpoint_url: str | None = None, client=None):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client or boto3.client(
            "s3",
            region_name=region,
            endpoint_url=endpoint_url,
            config=Config(retries={"max_attempts": 8, "mode": "adaptive"}),
        )

    def _full(self, kb: str, key: str = "") -> str:
        return f"{self.prefix}{validate_kb_name(kb)}/{key}"

    def list_kbs(self) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        kbs = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(self.prefix):].rstrip("/")
                try:
                    kbs.append(validate_kb_name(name))
                except ValueError:
                    continue
        return sorted(kbs)

    def list_objects(self, kb: str, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Keys come URL-encoded (EncodingType=url, asked for explicitly so botocore hands them
        over as sent): decoded to bytes here, an undecodable byte becomes a surrogate, then
        `\\xNN` in the escaped name, instead of botocore's silent U+FFFD, a name that exists nowhere."""
        from urllib.parse import unquote_to_bytes

        base = self._full(kb)
        kwargs = {"Bucket": self.bucket, "Prefix": base, "EncodingType": "url",
                  "PaginationConfig": {"PageSize": 1000}}
        if start_after:
            kwargs["StartAfter"] = base + unescape_key(start_after)
        for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
            for obj in page.get("Contents", []):
                full = unquote_to_bytes(obj["Key"]).decode("utf-8", "surrogateescape")
                raw = full[len(base):]
                if not raw or raw.endswith("/") or any(
                        part.startswith(".") and part not in (".", "..") for part in raw.split("/")):
                    continue  # a folder marker, or hidden (.quivr/...), as the local store skips them;
                    # "." and ".." segments are listed, to be refused and recorded as hostile keys
                key = escape_key(raw)
                yield ObjectInfo(
                    kb=kb,
                    key=key,
                    size=obj["Size"],
                    etag=obj["ETag"].strip('"'),
                    last_modified=obj["LastModified"],
                    content_type=content_type_for(key),
                    refused=raw_key_problem(raw),
                )

    def head(self, kb: str, key: str) -> ObjectInfo | None:
        if is_escaped(key):  # a refused name, recorded escaped: is its raw object still there?
            raw = unescape_key(key)
            try:
                key_bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                return None  # not valid UTF-8: no S3 request can name it (botocore sends text)
            resp = self._head_object(kb, raw)
            return None if resp is None else replace(self._info(kb, key, resp), refused=raw_key_problem(raw))
        check_object_key(key)
        resp = self._head_object(kb, key)
        return None if resp is None else self._info(kb, key, resp)

    def _head_object(self, kb: str, key: str) -> dict | None:
        """HEAD of the object named `key` (raw), or None when it does not exist."""
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._full(kb, key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def _info(self, kb: str, key: str, resp: dict) -> ObjectInfo:
        return ObjectInfo(
            kb=kb,
            key=key,
            size=resp["ContentLength"],
            etag=resp["ETag"].strip('"'),
            last_modified=resp["LastModified"],
            version_id=resp.get("VersionId") if resp.get("VersionId") not in (None, "null") else None,
            content_type=content_type_for(key) or resp.get("ContentType"),
        )

    def read(self, kb: str, key: str, max_bytes: int) -> ObjectContent:
        from botocore.exceptions import ClientError

        check_object_key(key)
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._full(kb, key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise IngestionError(ErrorType.NOT_FOUND, "object no longer exists in the bucket") from exc
            raise
        info = self._info(kb, key, resp)
        if info.size > max_bytes:
            resp["Body"].close()
            raise _too_large(info, max_bytes)
        data = resp["Body"].read(max_bytes + 1)
        if len(data) > max_bytes:
            raise _too_large(info, max_bytes)
        return ObjectContent(info=info, data=data)

    def put(self, kb: str, key: str, data: bytes) -> ObjectInfo:
        check_object_key(key)
        content_type = content_type_for(key)
        extra = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.bucket, Key=self._full(kb, key), Body=data, **extra)
        info = self.head(kb, key)
        assert info is not None
        return info

    def uri(self, kb: str, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(kb, key)}"
