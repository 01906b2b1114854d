"""One decoder for every text-like format (txt, md, rst, org, html, csv/tsv, json, xml).

Order, most certain first: a BOM (UTF-32 before UTF-16, whose LE BOM is UTF-32 LE's prefix);
BOM-less UTF-16 (every other byte NUL); strict UTF-8, because valid non-ASCII UTF-8 is
structurally unlikely by accident, and a page declaring latin-1 while being UTF-8 is the common
lie; a declared charset (HTML `<meta charset>` / `http-equiv`, XML `<?xml encoding?>`);
then charset-normalizer. Its guess on short Western text is often cp1250 ("nińo") or Big5,
so cp1252 (Windows' default, and this decoder's fallback before) wins whenever it is no more
chaotic than the guess. Text with NUL bytes left at that point is not text: it is decoded as
cp1252 so that parse_document's NUL check still refuses it as binary garbage.
"""

from __future__ import annotations

import codecs
import re

BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
# The HTML prescan reads 1024 bytes; an XML declaration comes first. A little slack for comments.
DECLARATION_WINDOW = 2048
DECLARED = re.compile(
    rb"""<\?xml[^>]*?\bencoding\s*=\s*["']([A-Za-z0-9._:-]+)"""
    rb"""|<meta[^>]*?\bcharset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""",
    re.IGNORECASE)
# WHATWG: browsers read these labels as windows-1252, and so do the pages that declare them.
WINDOWS_1252_ALIASES = {"iso8859-1", "ascii"}


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


def declared_encoding(data: bytes) -> str | None:
    """The codec named by an XML declaration or an HTML meta tag, if Python knows it."""
    match = DECLARED.search(data[:DECLARATION_WINDOW])
    if match is None:
        return None
    return codec_for_label((match.group(1) or match.group(2)).decode("ascii"))


def codec_for_label(label: str | None) -> str | None:
    """Python's codec for a declared charset label; None when unknown or impossible."""
    if not label:
        return None
    try:
        name = codecs.lookup(label.strip()).name
    except LookupError:
        return None
    if name.startswith(("utf-16", "utf-32")):  # the declaration was read as ASCII: it lies
        return None
    return "cp1252" if name in WINDOWS_1252_ALIASES else name


def decode_text(data: bytes, declared: str | None = None) -> str:
    """`declared`: a charset label from outside the bytes (a MIME part's `charset`), tried where
    an in-document declaration would be."""
    for bom, encoding in BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    utf16 = utf16_without_bom(data)
    if utf16 is not None:
        return utf16
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    declared = codec_for_label(declared) or declared_encoding(data)
    if declared is not None:
        try:
            return data.decode(declared)
        except UnicodeDecodeError:
            pass  # the declaration is wrong for these bytes: guess instead
    if b"\x00" not in data:
        guessed = _guess(data)
        if guessed is not None:
            return guessed
    return data.decode("cp1252", errors="replace")


def _guess(data: bytes) -> str | None:
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None or best.encoding == "cp1252":
        return None if best is None else str(best)
    western = from_bytes(data, cp_isolation=["cp1252"]).best()
    if western is not None and western.chaos <= best.chaos:
        return str(western)
    return str(best)
