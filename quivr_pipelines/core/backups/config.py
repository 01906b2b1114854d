"""Configuration backup: the project's config files and the environment that matters, secrets redacted.

The tar (gzip, streamed) holds dagster.yaml, workspace.yaml, pyproject.toml, deploy/** and an
`environment.json` of the relevant variables. A secret's value is replaced by REDACTED but its
name is kept: a restore must know which variables to set again. Secrets are found three ways,
because a name list alone always lags: the known names (every SecretStr of settings.py and its
aliases), names that say "secret", and passwords inside URLs of any value.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from quivr_pipelines.core.backups.crypto import BackupError
from quivr_pipelines.core.backups.streams import HashingWriter, file_sha256

ENV_PREFIXES = ("QUIVR_", "DAGSTER_", "OPENAI_", "PG", "AWS_", "QDRANT_")
# settings.py SecretStr fields with their aliases, and the cloud/driver secrets the stack reads.
SECRET_NAMES = frozenset({
    "QUIVR_QDRANT_API_KEY", "QUIVR_OPENAI_API_KEY", "OPENAI_API_KEY", "QUIVR_LLM_API_KEY",
    "QUIVR_BACKUP_AGE_IDENTITY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "PGPASSWORD", "QDRANT_API_KEY", "DAGSTER_PG_PASSWORD",
})
SECRET_NAME_PATTERN = re.compile(r"key|token|secret|password|passwd|credential|private", re.IGNORECASE)
URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]*:)([^\s/@]+)@")
# DSNs: only the password goes (the host and database name help a restore); not a URL: all of it.
DSN_NAMES = frozenset({"QUIVR_DATABASE_URL", "DATABASE_URL", "DAGSTER_PG_URL"})
KV_PASSWORD = re.compile(r"(?i)\b((?:password|passwd|pwd)\s*=\s*)[^\s;&]+")  # libpq key=value DSNs
REDACTED = "***redacted***"
FILES = ("dagster.yaml", "workspace.yaml", "pyproject.toml")
MAX_FILE_BYTES = 5 * 1024 * 1024
ENVIRONMENT_MEMBER = "environment.json"


@dataclass
class ConfigManifest:
    id: str
    created_at: str
    component: str = "config"
    files: list[dict] = field(default_factory=list)  # {path, size, sha256}
    skipped: list[dict] = field(default_factory=list)  # {path, reason}
    env_names: list[str] = field(default_factory=list)
    redacted_names: list[str] = field(default_factory=list)
    sha256: str = ""
    size: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def is_secret_name(name: str) -> bool:
    return name.upper() in SECRET_NAMES or bool(SECRET_NAME_PATTERN.search(name))


def redacted_environment(environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The relevant variables (ENV_PREFIXES) with secret values replaced; and the redacted names.
    A secret-named variable outside the prefixes (MY_SERVICE_TOKEN) is kept by name only: a
    deployment's own services read secrets a restore must set again too."""
    kept, redacted = {}, []
    for name in sorted(n for n in environ if n.upper().startswith(ENV_PREFIXES) or is_secret_name(n)):
        value = environ[name]
        if is_secret_name(name) or (name.upper() in DSN_NAMES and "://" not in value):
            kept[name] = REDACTED
        else:
            masked = URL_PASSWORD.sub(lambda m: m.group(1) + "***@", value)
            kept[name] = KV_PASSWORD.sub(lambda m: m.group(1) + "***", masked)
        if kept[name] != value:
            redacted.append(name)
    return kept, redacted


def _candidates(root: Path):
    for name in FILES:
        yield root / name
    deploy = root / "deploy"
    if deploy.is_dir() and not deploy.is_symlink():
        yield from sorted(p for p in deploy.rglob("*") if p.is_symlink() or p.is_file())


def _skip_reason(path: Path, root: Path) -> str | None:
    if path.is_symlink():
        try:
            path.resolve(strict=True).relative_to(root)
        except (OSError, ValueError):
            return "symlink outside the project root (or dangling)"
    if not path.is_file():
        return "not a regular file"
    if path.stat().st_size > MAX_FILE_BYTES:
        return f"larger than {MAX_FILE_BYTES} bytes"
    return None



def collect_configuration(project_root: Path, environ: Mapping[str, str], out: BinaryIO) -> ConfigManifest:
    """Write the configuration tar.gz to `out` (streamed) and return its manifest."""
    root = Path(project_root).resolve()
    manifest = ConfigManifest(id=uuid.uuid4().hex, created_at=datetime.now(UTC).isoformat())
    sink = HashingWriter(out)
    with tarfile.open(fileobj=sink, mode="w|gz") as tar:
        for path in _candidates(root):
            relative = path.relative_to(root).as_posix()
            if not path.exists() and not path.is_symlink():
                continue
            reason = _skip_reason(path, root)
            if reason:
                manifest.skipped.append({"path": relative, "reason": reason})
                continue
            real = path.resolve()
            info = tar.gettarinfo(str(real), arcname=relative)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with real.open("rb") as handle:
                tar.addfile(info, handle)
            manifest.files.append({"path": relative, "size": info.size, "sha256": file_sha256(real)})
        env, manifest.redacted_names = redacted_environment(environ)
        manifest.env_names = list(env)
        data = json.dumps(env, indent=2, sort_keys=True).encode()
        info = tarfile.TarInfo(ENVIRONMENT_MEMBER)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        manifest.files.append({"path": ENVIRONMENT_MEMBER, "size": len(data),
                               "sha256": hashlib.sha256(data).hexdigest()})
    manifest.sha256, manifest.size = sink.digest.hexdigest(), sink.size
    return manifest


def _check_member(member: tarfile.TarInfo) -> None:
    path = PurePosixPath(member.name)
    if member.size > MAX_FILE_BYTES:
        raise BackupError(f"configuration backup: member {member.name!r} refused (larger than "
                          f"{MAX_FILE_BYTES} bytes)")
    if path.is_absolute() or ".." in path.parts or not member.isfile():
        raise BackupError(f"configuration backup: member {member.name!r} refused "
                          "(absolute path, '..', a link or not a regular file)")


def restore_configuration(tar_file: BinaryIO, target_dir: Path, manifest: ConfigManifest | dict | None = None,
                          overwrite: bool = False) -> list[str]:
    """Extract the tar into `target_dir` safely; verify each file's sha256 against the manifest when
    given. Refuses links, absolute paths and '..' (before tarfile's "data" filter, which refuses
    them too), and existing files unless `overwrite`. Returns the restored paths."""
    target = Path(target_dir).resolve()
    expected = {}
    if manifest is not None:
        files = manifest.files if isinstance(manifest, ConfigManifest) else manifest["files"]
        expected = {f["path"]: f["sha256"] for f in files}
    restored = []
    with tarfile.open(fileobj=tar_file, mode="r|gz") as tar:
        for member in tar:
            _check_member(member)
            destination = target / member.name
            if destination.exists() and not overwrite:
                raise BackupError(f"configuration restore: {member.name} exists in {target}; "
                                  "pass overwrite=True to replace it")
            source = tar.extractfile(member)
            data = source.read() if source else b""  # members are at most MAX_FILE_BYTES
            if member.name in expected and hashlib.sha256(data).hexdigest() != expected[member.name]:
                raise BackupError(f"configuration restore: {member.name} does not match its sha256 "
                                  "in the manifest")
            member.mode = member.mode & 0o755 if member.mode else 0o644
            try:
                checked = tarfile.data_filter(member, str(target))
            except tarfile.FilterError as exc:
                raise BackupError(f"configuration backup: member {member.name!r} refused ({exc})") from None
            destination.parent.mkdir(parents=True, exist_ok=True)
            if not destination.parent.resolve().is_relative_to(target) or destination.is_symlink():
                raise BackupError(f"configuration restore: {member.name} would be written through a "
                                  f"symlink out of {target}; refused")
            destination.write_bytes(data)
            destination.chmod(checked.mode or 0o644)
            restored.append(member.name)
    missing = set(expected) - set(restored)
    if missing:
        raise BackupError(f"configuration restore: the tar lacks {', '.join(sorted(missing))}")
    return restored
