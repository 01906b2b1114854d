"""`backups`: where backup sets go (the artifact store) and how they are encrypted and kept."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field

from quivr_pipelines.resources.base import ClientResource


class BackupResource(ClientResource):
    """A folder (the twin, `$QUIVR_DATA_DIR/artifacts`) or `s3://bucket/prefix`
    (QUIVR_ARTIFACTS_URI), the age recipients (public keys) and the retention per component."""

    folder: str | None = Field(default=None, description="The artifact folder (unset with a bucket).")
    bucket: str | None = None
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None
    sse: str | None = Field(default=None, description="S3 server-side encryption (AES256, aws:kms, ...).")
    sse_kms_key_id: str | None = None
    age_recipients: str | None = Field(default=None, description="QUIVR_BACKUP_AGE_RECIPIENTS (public keys).")
    keep_catalog_days: float = 30
    keep_vectors_days: float = 14
    keep_config_days: float = 90
    max_age_hours: float = Field(default=26, description="The newest complete set must be younger than this.")

    def get(self):
        """The artifact store (core.artifacts.ArtifactStore)."""
        return self._get()

    def _build(self):
        from quivr_pipelines.core.artifacts import LocalArtifactStore, S3ArtifactStore

        if self.bucket:
            import boto3
            from botocore.config import Config

            client = boto3.client("s3", region_name=self.region, endpoint_url=self.endpoint_url,
                                  config=Config(retries={"max_attempts": 8, "mode": "adaptive"}))
            return S3ArtifactStore(client, self.bucket, self.prefix, sse=self.sse, sse_kms_key_id=self.sse_kms_key_id)
        if not self.folder:
            raise ValueError("BackupResource needs folder or bucket")
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        return LocalArtifactStore(Path(self.folder))

    def recipients(self) -> list:
        from quivr_pipelines.core.backups.crypto import recipients_from_env

        return recipients_from_env(self.age_recipients)

    def keep(self) -> dict[str, timedelta]:
        return {"catalog": timedelta(days=self.keep_catalog_days), "vectors": timedelta(days=self.keep_vectors_days),
                "config": timedelta(days=self.keep_config_days)}
