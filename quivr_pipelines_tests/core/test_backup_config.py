"""Configuration backup: the right files, secrets redacted everywhere in the tar, safe restore."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile

import pytest

from quivr_pipelines.core.backups.config import (
    MAX_FILE_BYTES,
    REDACTED,
    collect_configuration,
    restore_configuration,
)
from quivr_pipelines.core.backups.crypto import BackupError

OPENAI = "sk-proj-abcdefghijklmnop1234"
DB_PASSWORD = "s3cr3t-db-pass"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SERVICE_TOKEN = "tok-9876543210-zyx"
ENVIRON = {
    "OPENAI_API_KEY": OPENAI,
    "QUIVR_DATABASE_URL": f"postgresql://quivr:{DB_PASSWORD}@db.internal:5432/quivr",
    "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    "MY_SERVICE_TOKEN": SERVICE_TOKEN,
    "QUIVR_FOO": "plain",
    "QUIVR_QDRANT_URL": "http://qdrant:6333",
    "DAGSTER_HOME": "/opt/dagster",
    "HOME": "/root",
    "PGSERVICE_DSN_EXTRA": "host=db dbname=q password=kv-secret-123 sslmode=require",
}


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    (root / "deploy" / "k8s").mkdir(parents=True)
    (root / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (root / "workspace.yaml").write_text("load_from:\n  - python_module: quivr_pipelines.definitions\n")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (root / "deploy" / "compose.yaml").write_text("services: {}\n")
    (root / "deploy" / "k8s" / "job.yaml").write_text("kind: Job\n")
    (root / "deploy" / "big.bin").write_bytes(b"\0" * (MAX_FILE_BYTES + 1))
    (root / "deploy" / "passwd").symlink_to("/etc/passwd")
    (root / "deploy" / "alias.yaml").symlink_to(root / "deploy" / "compose.yaml")
    return root


def _collect(root, environ=ENVIRON):
    out = io.BytesIO()
    manifest = collect_configuration(root, environ, out)
    return manifest, out.getvalue()


def test_files_skips_and_manifest(project):
    manifest, data = _collect(project)
    paths = [f["path"] for f in manifest.files]
    assert paths == ["dagster.yaml", "workspace.yaml", "pyproject.toml", "deploy/alias.yaml",
                     "deploy/compose.yaml", "deploy/k8s/job.yaml", "environment.json"]
    assert {s["path"]: s["reason"].split()[0] for s in manifest.skipped} == {
        "deploy/big.bin": "larger", "deploy/passwd": "symlink"}
    assert manifest.component == "config" and manifest.size == len(data)
    assert manifest.sha256 == hashlib.sha256(data).hexdigest()  # the tar as written, before any encryption
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        assert tar.getnames() == paths
        assert all(m.isfile() for m in tar.getmembers())


def test_environment_redacts_exactly_the_secrets(project):
    manifest, data = _collect(project)
    plain = gzip.decompress(data)
    for secret in (OPENAI, DB_PASSWORD, AWS_SECRET, SERVICE_TOKEN):
        assert secret.encode() not in plain and secret.encode() not in data
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        env = json.load(tar.extractfile("environment.json"))
    assert env == {
        "AWS_SECRET_ACCESS_KEY": REDACTED, "DAGSTER_HOME": "/opt/dagster", "MY_SERVICE_TOKEN": REDACTED,
        "OPENAI_API_KEY": REDACTED, "QUIVR_DATABASE_URL": "postgresql://quivr:***@db.internal:5432/quivr",
        "QUIVR_FOO": "plain", "QUIVR_QDRANT_URL": "http://qdrant:6333",
        "PGSERVICE_DSN_EXTRA": "host=db dbname=q password=*** sslmode=require",
    }
    assert manifest.redacted_names == ["AWS_SECRET_ACCESS_KEY", "MY_SERVICE_TOKEN", "OPENAI_API_KEY",
                                       "PGSERVICE_DSN_EXTRA", "QUIVR_DATABASE_URL"]
    assert b"kv-secret-123" not in plain
    assert "HOME" not in manifest.env_names


def test_restore_round_trip_and_refuses_overwrite(project, tmp_path):
    manifest, data = _collect(project)
    target = tmp_path / "restored"
    restored = restore_configuration(io.BytesIO(data), target, manifest)
    assert (target / "deploy" / "k8s" / "job.yaml").read_text() == "kind: Job\n"
    assert not (target / "deploy" / "passwd").exists() and len(restored) == 7
    with pytest.raises(BackupError, match="exists"):
        restore_configuration(io.BytesIO(data), target, manifest)
    restore_configuration(io.BytesIO(data), target, manifest.to_dict(), overwrite=True)


def test_restore_detects_a_changed_file(project, tmp_path):
    manifest, data = _collect(project)
    manifest.files[0]["sha256"] = "0" * 64
    with pytest.raises(BackupError, match="dagster.yaml does not match its sha256"):
        restore_configuration(io.BytesIO(data), tmp_path / "t", manifest)


def _hostile(kind: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo({"absolute": "/tmp/evil", "dotdot": "../evil", "nested": "deploy/../../evil",
                                "symlink": "deploy/link", "hardlink": "deploy/hard", "device": "dev"}[kind])
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
        elif kind == "device":
            info.type = tarfile.CHRTYPE
        tar.addfile(info, io.BytesIO(b"") if info.isfile() else None)
    return out.getvalue()


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "nested", "symlink", "hardlink", "device"])
def test_hostile_members_refused(kind, tmp_path):
    target = tmp_path / "t"
    with pytest.raises(BackupError, match="refused"):
        restore_configuration(io.BytesIO(_hostile(kind)), target)
    assert not (tmp_path / "evil").exists() and not os.path.lexists(target / "deploy" / "link")


def test_restore_refuses_writing_through_a_symlink_in_the_target(project, tmp_path):
    manifest, data = _collect(project)
    target, outside = tmp_path / "t", tmp_path / "outside"
    outside.mkdir()
    target.mkdir()
    (target / "deploy").symlink_to(outside)
    with pytest.raises(BackupError, match="outside|symlink"):
        restore_configuration(io.BytesIO(data), target, manifest)
    assert list(outside.iterdir()) == []
