"""Names and identifiers: KB names, object keys, Dagster partition keys and Qdrant point ids.

Point ids are uuid5 of (KB, object key, chunk index): re-running any ingestion writes the same
ids, so writes are idempotent and a document's chunks can be found without a lookup table.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from urllib.parse import quote, unquote

from quivr_pipelines.core.errors import IngestionError

KB_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
POINT_NAMESPACE = uuid.UUID("5f1c7a4e-8e8b-4f43-9d43-6a1f0b1c2d3e")
MAX_OBJECT_KEY_BYTES = 1024  # S3's own limit


def validate_kb_name(name: str) -> str:
    if not KB_NAME_PATTERN.match(name):
        raise ValueError(
            f"invalid knowledge base name {name!r}: use 1-63 characters a-z, 0-9, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


# Characters a name may not hold, each for its reason: they make a name that cannot be stored or
# shown as it is (undecodable bytes), rewrite a terminal or a log line (controls, line separators),
# or look like another name (bidi overrides turn "gpj.exe" into "exe.jpg" on screen; zero-width
# characters make two different names look the same). Legitimate uses exist (ZWNJ in Persian,
# ZWJ in emoji sequences), but a file name is an identifier, not prose: refused, never indexed.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_INVISIBLE = frozenset({"Cf", "Zl", "Zp"})  # format characters (zero-width, U+FEFF, U+2060...), separators
_ESCAPES = re.compile(r"\\(?:\\|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")


def _escape_char(ch: str, backslash: bool) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as os.fsdecode/surrogateescape hand it over
        return f"\\x{code - 0xDC00:02x}"
    if ch == "\\":
        return "\\\\" if backslash else ch
    category = unicodedata.category(ch)
    if category == "Cc" and code < 0x80:
        return f"\\x{code:02x}"
    if category in ("Cc", "Cs") or category in _INVISIBLE:
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return ch


def escape_key(raw: str) -> str:
    """The name under which an object is recorded and shown: `raw` itself when it holds nothing
    to hide, else with each undecodable byte as `\\xNN`, each control, bidi, zero-width or other
    invisible character as `\\xNN`/`\\uNNNN`, and backslashes doubled. Injective (`unescape_key`
    inverts it), so two objects never share a catalog row; always valid UTF-8 and printable, so
    PostgreSQL, JSON, Dagster and a terminal all take it. Ordinary keys (no backslash, nothing
    invisible) are returned unchanged, through a fast C-level check."""
    if raw.isprintable() and "\\" not in raw:
        return raw
    return "".join(_escape_char(ch, backslash=True) for ch in raw)


def unescape_key(key: str) -> str:
    """The raw name `escape_key` made `key` from (undecodable bytes as surrogateescape)."""
    def one(match: re.Match) -> str:
        text = match.group()
        if text == "\\\\":
            return "\\"
        code = int(text[2:], 16)
        return chr(0xDC00 + code) if text[1] == "x" and code >= 0x80 else chr(code)

    return _ESCAPES.sub(one, key)


def is_escaped(key: str) -> bool:
    """Whether `key` is the escaped form of a different raw name (see `escape_key`)."""
    return "\\" in key and escape_key(unescape_key(key)) == key != unescape_key(key)


def printable(text: object) -> str:
    """`text` safe to print on a terminal or in a table: control, bidi, zero-width and other
    invisible characters (and undecodable bytes) shown escaped; backslashes left as they are."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch == " " else _escape_char(ch, backslash=False) for ch in text)


def key_bytes(raw: str) -> bytes:
    """The bytes both stores order keys by (S3 lists in UTF-8 byte order; the local store too)."""
    return raw.encode("utf-8", "surrogateescape")


def object_key_problem(key: str) -> str | None:
    """Why `key` (a raw name, or the escaped form of one) may not be read, or None."""
    if is_escaped(key):
        problem = raw_key_problem(unescape_key(key))
        return f"{problem} (shown escaped)" if problem else None
    return raw_key_problem(key)


def raw_key_problem(key: str) -> str | None:
    """Run on every listed key (millions a pass): string methods only, no regex on the usual path."""
    if not key:
        return "empty object key"
    if len(key) * 4 > MAX_OBJECT_KEY_BYTES and len(key_bytes(key)) > MAX_OBJECT_KEY_BYTES:
        return f"object key longer than {MAX_OBJECT_KEY_BYTES} bytes"
    if not key.isprintable():  # fast path: an ordinary key skips the per-character checks
        categories = {unicodedata.category(ch) for ch in key}
        if "Cs" in categories:
            return "object key is not valid UTF-8 (undecodable bytes are shown as \\xNN)"
        if "Cc" in categories:
            return "object key contains control characters"
        if any(ch in BIDI_CONTROLS for ch in key):
            return "object key contains bidirectional-override characters (they disguise a name on screen)"
        if categories & _INVISIBLE:
            return "object key contains invisible (zero-width or format) characters"
    if key[0] in "/\\" or (key[1:2] == ":" and key[0].isascii() and key[0].isalpha()):
        return "object key is an absolute path"
    parts = re.split(r"[/\\]", key) if "\\" in key else key.split("/")
    if "." in parts or ".." in parts:
        return "object key contains '.' or '..' path segments"
    if "" in parts:
        return "object key contains an empty path segment"
    if "\\" in key:
        # A folder separator on Windows and a plain character in S3 and on Linux: the same key
        # names different things to different tools. Refusing it also keeps escaped names (which
        # always hold a backslash) from ever colliding with a real key.
        return "object key contains a backslash (a folder separator on Windows, a plain character elsewhere)"
    return None


def check_object_key(key: str) -> str:
    """Reject keys that could escape a store root, confuse a shell, a log or a filesystem, or
    pass for another name. Returns `key`; raises `hostile_key` with the precise reason."""
    problem = object_key_problem(key)
    if problem is not None:
        raise IngestionError("hostile_key", problem)
    return key


def partition_key(kb: str, object_key: str) -> str:
    """`<kb>/<escaped key>`: reversible, and free of what Dagster forbids in partition keys
    (commas, brackets, '...', control characters)."""
    escaped = quote(object_key, safe="/-_.~ ()@+=", errors="surrogateescape")
    escaped = escaped.replace("..", "%2E%2E")
    return f"{kb}/{escaped}"


def split_partition_key(key: str) -> tuple[str, str]:
    kb, _, escaped = key.partition("/")
    return kb, unquote(escaped, errors="surrogateescape")


def point_id(kb: str, object_key: str, chunk_index: int) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, f"{kb}\x1f{object_key}\x1f{chunk_index}"))
