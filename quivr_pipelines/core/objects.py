"""Object storage: one interface, a local folder (the embedded default) and S3 (boto3).

Layout in both: `<root>/<kb>/<object key>`. A KB is the first path segment. The store is
read-only for ingestion; only `put` (used by the CLI to add files) writes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from quivr_pipelines.core.content_types import content_type_for
from quivr_pipelines.core.errors import ErrorType, IngestionError
from quivr_pipelines.core.keys import check_object_key, validate_kb_name


@dataclass(frozen=True)
class ObjectInfo:
    kb: str
    key: str
    size: int
    etag: str
    last_modified: datetime
    version_id: str | None = None
    content_type: str | None = None

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
    """A folder on disk. Keys never leave the root: hostile keys are refused before any I/O."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()

    def _path(self, kb: str, key: str) -> Path:
        validate_kb_name(kb)
        check_object_key(key)
        path = (self.root / kb / key).resolve()
        kb_root = (self.root / kb).resolve()
        if kb_root != self.root / kb or not path.is_relative_to(kb_root):
            raise IngestionError(ErrorType.HOSTILE_KEY, "object key resolves outside the knowledge base folder")
        return path

    def list_kbs(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(
            entry.name
            for entry in os.scandir(self.root)
            if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".")
        )

    def list_objects(self, kb: str, start_after: str | None = None) -> Iterator[ObjectInfo]:
        validate_kb_name(kb)
        kb_root = self.root / kb
        if not kb_root.is_dir():
            return
        keys = []
        for dirpath, dirnames, filenames in os.walk(kb_root, followlinks=False):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel_dir = os.path.relpath(dirpath, kb_root)
            for name in filenames:
                if name.startswith("."):
                    continue
                keys.append(name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/"))
        keys.sort()
        for key in keys:
            if start_after is not None and key <= start_after:
                continue
            info = self._stat(kb, key, kb_root / key)
            if info is not None:
                yield info

    def _stat(self, kb: str, key: str, path: Path) -> ObjectInfo | None:
        try:
            st = path.lstat()
        except FileNotFoundError:
            return None
        if not path.is_file() or path.is_symlink():
            return None
        return ObjectInfo(
            kb=kb,
            key=key,
            size=st.st_size,
            etag=f"{st.st_mtime_ns:x}-{st.st_size:x}",
            last_modified=datetime.fromtimestamp(st.st_mtime, tz=UTC),
            content_type=content_type_for(key),
        )

    def head(self, kb: str, key: str) -> ObjectInfo | None:
        return self._stat(kb, key, self._path(kb, key))

    def read(self, kb: str, key: str, max_bytes: int) -> ObjectContent:
        path = self._path(kb, key)
        info = self._stat(kb, key, path)
        if info is None:
            raise IngestionError(ErrorType.NOT_FOUND, "object no longer exists in the store")
        if info.size > max_bytes:
            raise _too_large(info, max_bytes)
        with open(path, "rb") as handle:  # read-only: the source is never modified
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
        base = self._full(kb)
        kwargs = {"Bucket": self.bucket, "Prefix": base, "PaginationConfig": {"PageSize": 1000}}
        if start_after:
            kwargs["StartAfter"] = base + start_after
        for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
            for obj in page.get("Contents", []):
                key = obj["Key"][len(base):]
                if not key or key.endswith("/"):
                    continue
                yield ObjectInfo(
                    kb=kb,
                    key=key,
                    size=obj["Size"],
                    etag=obj["ETag"].strip('"'),
                    last_modified=obj["LastModified"],
                    content_type=content_type_for(key),
                )

    def head(self, kb: str, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        check_object_key(key)
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=self._full(kb, key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return self._info(kb, key, resp)

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
