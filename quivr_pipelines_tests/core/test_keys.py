import pytest

from quivr_pipelines.core.errors import IngestionError
from quivr_pipelines.core.keys import (
    check_object_key,
    escape_key,
    is_escaped,
    partition_key,
    point_id,
    printable,
    split_partition_key,
    unescape_key,
    validate_kb_name,
)

HOSTILE_KEYS = [
    ("../etc/passwd", "'.' or '..'"),
    ("docs/../../secret.txt", "'.' or '..'"),
    ("/etc/passwd", "absolute path"),
    ("C:/Windows/win.ini", "absolute path"),
    ("\\\\server\\share", "absolute path"),
    ("evil\nname.txt", "control characters"),
    ("nul\x00byte.pdf", "control characters"),
    ("tab\tname.txt", "control characters"),
    ("a//b.txt", "empty path segment"),
    ("", "empty object key"),
]


@pytest.mark.parametrize("key,reason", HOSTILE_KEYS)
def test_hostile_keys_are_refused_with_a_precise_reason(key, reason):
    with pytest.raises(IngestionError) as excinfo:
        check_object_key(key)
    assert excinfo.value.error_type == "hostile_key"
    assert reason in excinfo.value.message


@pytest.mark.parametrize("key", ["report.pdf", "a/b/c.docx", "unicode/été 2024.md", "x..y.txt", "...dots"])
def test_ordinary_keys_pass(key):
    assert check_object_key(key) == key


@pytest.mark.parametrize("key", ["a,b[1].pdf", "dots.../x.txt", "été/naïve.md", "sp ace/(1)+.txt", "pct%41.txt"])
def test_partition_keys_round_trip_and_avoid_dagster_forbidden_text(key):
    encoded = partition_key("kb", key)
    assert split_partition_key(encoded) == ("kb", key)
    for forbidden in (",", "[", "]", "...", "\n"):
        assert forbidden not in encoded


def test_point_ids_are_derived_and_distinct():
    assert point_id("kb", "a.txt", 0) == point_id("kb", "a.txt", 0)
    assert len({point_id("kb", "a.txt", 0), point_id("kb", "a.txt", 1), point_id("kb2", "a.txt", 0)}) == 3


@pytest.mark.parametrize("name", ["Docs", "-x", "a/b", "", "x" * 64, "kb name"])
def test_invalid_kb_names(name):
    with pytest.raises(ValueError):
        validate_kb_name(name)


def test_ingestion_errors_survive_pickling_across_processes():
    import pickle

    error = pickle.loads(pickle.dumps(IngestionError("encrypted", "password-protected PDF")))
    assert (error.error_type, error.message, error.status) == ("encrypted", "password-protected PDF", "failed")


SPOOFING_KEYS = [
    ("caf\udce9.txt", "not valid UTF-8"),  # the byte 0xE9 from a Latin-1 file system, via os.fsdecode
    ("invoice\u202etxt.exe", "bidirectional-override"),
    ("a\u202ab\u202bc\u202cd\u202de.txt", "bidirectional-override"),
    ("x\u2066y\u2067z\u2068w\u2069.txt", "bidirectional-override"),
    ("zero\u200bwidth.txt", "invisible"),
    ("non\u200cjoiner.txt", "invisible"),
    ("joiner\u200d.txt", "invisible"),
    ("\ufeffbom.txt", "invisible"),
    ("word\u2060joiner.txt", "invisible"),
    ("line\u2028sep.txt", "invisible"),
    ("esc\x1b[31m.txt", "control characters"),
    ("c1\x85.txt", "control characters"),
    ("back\\slash.txt", "backslash"),
]


@pytest.mark.parametrize("raw,reason", SPOOFING_KEYS)
def test_spoofing_and_undecodable_keys_are_refused_and_escaped_reversibly(raw, reason):
    """Before: a surrogate crashed every write of the key (UnicodeEncodeError), bidi and
    zero-width characters passed as ordinary names."""
    with pytest.raises(IngestionError) as excinfo:
        check_object_key(raw)
    assert reason in excinfo.value.message
    escaped = escape_key(raw)
    assert escaped.isprintable() and escaped.encode("utf-8")  # PostgreSQL, JSON and terminals take it
    assert unescape_key(escaped) == raw and is_escaped(escaped)
    with pytest.raises(IngestionError) as excinfo:  # the escaped name is refused for the same reason
        check_object_key(escaped)
    assert reason in excinfo.value.message


def test_escaping_never_makes_two_names_one():
    raws = ["caf\udce9.txt", "caf\\xe9.txt", "caf\\\\xe9.txt", "c\x80", "c\udc80", "c\\u0080", "ok.txt"]
    assert len({escape_key(raw) for raw in raws}) == len(raws)
    assert escape_key("ok.txt") == "ok.txt" and escape_key("été 2024.md") == "été 2024.md"


def test_printable_shows_controls_escaped_and_leaves_text_alone():
    assert printable("\x1b[31mred\u202e.txt") == "\\x1b[31mred\\u202e.txt"
    assert printable("été 2024\\x.md") == "été 2024\\x.md"


def test_partition_keys_of_undecodable_names_round_trip():
    encoded = partition_key("kb", "caf\udce9.txt")
    assert encoded == "kb/caf%E9.txt" and split_partition_key(encoded) == ("kb", "caf\udce9.txt")
