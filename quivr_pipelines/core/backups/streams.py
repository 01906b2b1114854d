"""What every backup component does with bytes: count and hash them as they pass, or hash a file."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


class HashingWriter:
    """A write-only file object that passes everything to `out`, counting and hashing it (sha256)
    on the way: a stored file's checksum without reading it a second time."""

    def __init__(self, out: BinaryIO):
        self.out, self.size, self.digest = out, 0, hashlib.sha256()

    def write(self, data) -> int:
        self.out.write(data)
        self.size += len(data)
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        flush = getattr(self.out, "flush", None)
        if flush:
            flush()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as src:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
