"""The one content-type table: an object's key -> the MIME type stored in the catalog and payloads.

Object stores (what a failed document's catalog row shows) and the parser (what an ingested
document's row and points show) both ask `content_type_for`, so a file of one type gets one
content type whatever happened to it.

The table is the standard `mimetypes` defaults plus the formats the parser reads, held in a
private `MimeTypes` instance: the process-wide registry is left alone (the host application's
`mimetypes.guess_type` is unchanged), and the answer does not depend on the machine's
`/etc/mime.types`, which the global registry reads (it maps .xml to text/xml on one machine and
application/xml on another, .org to a Lotus Organizer file).
"""

from __future__ import annotations

import functools
import mimetypes
from pathlib import PurePosixPath

# What Python's defaults lack (the Office Open XML formats among them) or name otherwise, for the
# documents we parse. The values are those the parser has always written to points (searchable
# with a content-type filter), kept as they were.
ADDITIONS = {
    ".text": "text/plain", ".log": "text/plain",
    ".md": "text/markdown", ".markdown": "text/markdown",
    ".rst": "text/x-rst", ".org": "text/org",
    ".xml": "application/xml", ".ndjson": "application/x-ndjson",
    ".msg": "application/vnd.ms-outlook", ".epub": "application/epub+zip",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


@functools.cache
def _table() -> mimetypes.MimeTypes:
    table = mimetypes.MimeTypes()  # the module's built-in defaults only; no system files
    for extension, content_type in ADDITIONS.items():
        table.add_type(content_type, extension)
    return table


def content_type_for(key: str) -> str | None:
    """The MIME type of an object key by its extension (case-insensitive), or None when unknown:
    the caller may then keep what the store declared, rather than a made-up octet-stream."""
    extension = PurePosixPath(key).suffix.lower()
    if not extension:
        return None
    return _table().guess_type("document" + extension, strict=False)[0]
