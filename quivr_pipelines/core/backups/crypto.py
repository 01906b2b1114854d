"""Client-side encryption of backup files with age (pyrage: x25519 recipients, streamed).

A backup is encrypted to every recipient of QUIVR_BACKUP_AGE_RECIPIENTS (public keys: they can
sit in the environment of the backup job); only a restore needs a private key
(QUIVR_BACKUP_AGE_IDENTITY, or a file of them in QUIVR_BACKUP_AGE_IDENTITY_FILE). Key material
never reaches an error or a log line: identities are registered for redaction, and errors name
the recipient's position, not the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import BinaryIO

import pyrage
from pyrage import x25519

from quivr_pipelines.core.redaction import register

HEADER = b"age-encryption.org/v1"
SEPARATORS = re.compile(r"[\s,]+")


class BackupError(RuntimeError):
    """A backup file that cannot be written or read back; one line, no secret."""


class BackupKeyError(BackupError):
    """A file that cannot be encrypted or decrypted with the configured keys; one line, no key."""


def recipients_from_env(value: str | None) -> list:
    """The age recipients of QUIVR_BACKUP_AGE_RECIPIENTS (comma, space or newline separated)."""
    found = []
    for n, text in enumerate((t for t in SEPARATORS.split(value or "") if t), start=1):
        try:
            found.append(x25519.Recipient.from_str(text))
        except pyrage.RecipientError:
            raise ValueError(f"QUIVR_BACKUP_AGE_RECIPIENTS: recipient {n} ({text[:8]}…) is not an age x25519 "
                             "public key (age1…)") from None
    return found


def identities_from_env(identity: str | None, identity_file: str | Path | None) -> list:
    """The private keys for a restore: QUIVR_BACKUP_AGE_IDENTITY and/or the lines of
    QUIVR_BACKUP_AGE_IDENTITY_FILE (comments '#' and blank lines skipped)."""
    texts = [identity] if identity else []
    if identity_file:
        path = Path(identity_file)
        try:
            texts += [line.strip() for line in path.read_text().splitlines()
                      if line.strip() and not line.lstrip().startswith("#")]
        except OSError as exc:
            raise ValueError(f"QUIVR_BACKUP_AGE_IDENTITY_FILE: cannot read {path} ({exc.strerror})") from None
    found = []
    for n, text in enumerate(texts, start=1):
        register(text)
        try:
            found.append(x25519.Identity.from_str(text))
        except pyrage.IdentityError:
            raise ValueError(f"age identity {n} is not an x25519 private key (AGE-SECRET-KEY-1…)") from None
    return found


def is_encrypted(head: bytes) -> bool:
    return head.startswith(HEADER)


def encrypt_stream(src: BinaryIO, dst: BinaryIO, recipients: list) -> None:
    try:
        pyrage.encrypt_io(src, dst, recipients)
    except pyrage.EncryptError as exc:
        raise BackupKeyError(f"encryption failed ({exc})") from None


def decrypt_stream(src: BinaryIO, dst: BinaryIO, identities: list, name: str = "the file") -> None:
    if not identities:
        raise BackupKeyError(f"{name} is encrypted (age); set QUIVR_BACKUP_AGE_IDENTITY or "
                             "QUIVR_BACKUP_AGE_IDENTITY_FILE to restore it")
    try:
        pyrage.decrypt_io(src, dst, identities)
    except pyrage.DecryptError as exc:
        reason = str(exc)
        if "No matching keys" in reason:
            raise BackupKeyError(f"{name} is encrypted (age) and no configured identity matches its "
                                 "recipients") from None
        raise BackupKeyError(f"{name} cannot be decrypted: {reason.lower()} (damaged or truncated)") from None
    except OSError as exc:  # pyrage reports a damaged payload chunk as an OSError while streaming
        raise BackupKeyError(f"{name} cannot be decrypted: {exc} (damaged or truncated)") from None
