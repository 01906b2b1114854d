"""`object_store`: where the documents are. A local folder (the embedded twin) or S3."""

from __future__ import annotations

from pathlib import Path

from quivr_pipelines.core.objects import LocalFolderStore, ObjectStore, S3Store
from quivr_pipelines.resources.base import ClientResource


class ObjectStoreResource(ClientResource):
    """Any object store; assets and sensors take this type, deployments bind a subclass."""

    def get(self) -> ObjectStore:
        return self._get()


class LocalFolderResource(ObjectStoreResource):
    """One folder per KB under `root` (QUIVR_LOCAL_ROOT, default $QUIVR_DATA_DIR/inbox)."""

    root: str
    allow_hardlinks: bool = False  # QUIVR_LOCAL_ALLOW_HARDLINKS

    def _build(self) -> ObjectStore:
        Path(self.root).mkdir(parents=True, exist_ok=True)
        return LocalFolderStore(Path(self.root), allow_hardlinks=self.allow_hardlinks)


class S3Resource(ObjectStoreResource):
    """One prefix per KB under s3://bucket/prefix (QUIVR_S3_*; credentials from the AWS chain)."""

    bucket: str
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None

    def _build(self) -> ObjectStore:
        return S3Store(self.bucket, self.prefix, self.region, self.endpoint_url)
