"""age encryption of backup files: keys from the environment, streamed round trips, and errors
that say what to do without showing a key."""

from __future__ import annotations

import io
import logging
import os
import tracemalloc

import pytest
from pyrage import x25519

from quivr_pipelines.core.backups.crypto import (
    BackupKeyError,
    decrypt_stream,
    encrypt_stream,
    identities_from_env,
    is_encrypted,
    recipients_from_env,
)
from quivr_pipelines.core.redaction import redact


class Generated(io.RawIOBase):
    """`size` pseudo-random bytes, read in pieces: never all in memory."""

    def __init__(self, size: int):
        self.left, self.block = size, os.urandom(1 << 16)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left, len(self.block))
        buffer[:n] = self.block[:n]
        self.left -= n
        return n


class Counting(io.RawIOBase):
    def __init__(self):
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.size += len(data)
        return len(data)


def test_round_trip_to_several_recipients_each_of_which_decrypts():
    first, second = x25519.Identity.generate(), x25519.Identity.generate()
    recipients = recipients_from_env(f"{first.to_public()}, {second.to_public()}\n")
    assert len(recipients) == 2
    plain = os.urandom(300_000)
    sealed = io.BytesIO()
    encrypt_stream(io.BytesIO(plain), sealed, recipients)
    assert is_encrypted(sealed.getvalue()[:32]) and not is_encrypted(plain[:32])
    for identity in (first, second):
        out = io.BytesIO()
        decrypt_stream(io.BytesIO(sealed.getvalue()), out, [identity])
        assert out.getvalue() == plain


def test_a_large_stream_is_encrypted_in_bounded_memory():
    identity = x25519.Identity.generate()
    size = 64 * 1024 * 1024
    out = Counting()
    tracemalloc.start()
    try:
        encrypt_stream(io.BufferedReader(Generated(size), 1 << 20), out, [identity.to_public()])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.size > size and peak < size // 8, peak


def test_no_key_another_key_and_damage_each_say_so_without_a_key(caplog):
    identity, other = x25519.Identity.generate(), x25519.Identity.generate()
    sealed = io.BytesIO()
    encrypt_stream(io.BytesIO(b"catalog dump" * 1000), sealed, [identity.to_public()])
    data = sealed.getvalue()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BackupKeyError, match="set QUIVR_BACKUP_AGE_IDENTITY or QUIVR_BACKUP_AGE_IDENTITY_FILE"):
        decrypt_stream(io.BytesIO(data), io.BytesIO(), [], name="catalog.dump")
    with pytest.raises(BackupKeyError, match="no configured identity matches") as wrong:
        decrypt_stream(io.BytesIO(data), io.BytesIO(), [other])
    with pytest.raises(BackupKeyError, match="damaged or truncated") as truncated:
        decrypt_stream(io.BytesIO(data[: len(data) // 2]), io.BytesIO(), [identity])
    flipped = bytearray(data)
    flipped[-10] ^= 1
    with pytest.raises(BackupKeyError):
        decrypt_stream(io.BytesIO(bytes(flipped)), io.BytesIO(), [identity])
    for text in (str(wrong.value), str(truncated.value), caplog.text):
        assert "AGE-SECRET-KEY" not in text


def test_keys_from_the_environment(tmp_path):
    identity = x25519.Identity.generate()
    secret = str(identity)
    file = tmp_path / "keys.txt"
    file.write_text(f"# created by a test\n\n{secret}\n")
    assert len(identities_from_env(None, file)) == 1
    assert len(identities_from_env(secret, file)) == 2
    assert secret not in redact(f"the key is {secret}")  # registered for redaction
    assert recipients_from_env(None) == [] and recipients_from_env(" ,\n") == []
    with pytest.raises(ValueError, match="recipient 2") as bad:
        recipients_from_env(f"{identity.to_public()} age1notakeyatall")
    assert "age1notakeyatall" not in str(bad.value)
    with pytest.raises(ValueError, match="identity 1 is not") as bad_identity:
        identities_from_env("AGE-SECRET-KEY-1NOTREALLY", None)
    assert "NOTREALLY" not in str(bad_identity.value)
    with pytest.raises(ValueError, match="cannot read"):
        identities_from_env(None, tmp_path / "missing.txt")
