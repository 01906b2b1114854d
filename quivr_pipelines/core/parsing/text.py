"""Decode plain text of any common encoding: BOMs, BOM-less UTF-16, UTF-8, then cp1252."""

from __future__ import annotations

import codecs


def utf16_without_bom(data: bytes) -> str | None:
    """UTF-16 without a BOM shows as every other byte NUL; unstructured reads it as garbage."""
    head = data[:512]
    if len(head) < 4 or len(data) % 2:
        return None
    even, odd = head[0::2], head[1::2]
    if even.count(0) > 0.4 * len(even) and odd.count(0) == 0:
        return data.decode("utf-16-be", errors="replace")
    if odd.count(0) > 0.4 * len(odd) and even.count(0) == 0:
        return data.decode("utf-16-le", errors="replace")
    return None


def decode_text(data: bytes) -> str:
    for bom, encoding in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                          (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    utf16 = utf16_without_bom(data)
    if utf16 is not None:
        return utf16
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Windows-1252 is a superset of Latin-1's printable range: the usual non-UTF-8 text.
        return data.decode("cp1252", errors="replace")
