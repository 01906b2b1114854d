import pytest

from quivr_pipelines.core.errors import IngestionError
from quivr_pipelines.core.keys import (
    check_object_key,
    partition_key,
    point_id,
    split_partition_key,
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
