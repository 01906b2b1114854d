"""Redaction: known secret values and key-like patterns leave every log line and error."""

from __future__ import annotations

import io
import json
import logging

import pytest
from pydantic import SecretStr

from quivr_pipelines.core import redaction
from quivr_pipelines.core.redaction import MASK, redact


@pytest.mark.parametrize(("text", "hidden"), [
    ("Incorrect API key provided: sk-test-abcdef123456. You can find", "sk-test-abcdef123456"),
    ("Authorization: Bearer qvr_Zm9vYmFyYmF6cXV4cXV1eHF1dXg", "qvr_Zm9vYmFyYmF6cXV4cXV1eHF1dXg"),
    ("Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "eyJhbGciOiJSUzI1NiJ9"),
    ("connect postgresql://quivr:hunter2-pw@db.internal:5432/quivr failed", "hunter2-pw"),
    ("dsn: host=db user=quivr password=s3cr3t-pw dbname=q", "s3cr3t-pw"),
    ('{"api_key": "abcd-efgh-ijkl"}', "abcd-efgh-ijkl"),
])
def test_key_like_patterns_are_redacted(text, hidden):
    out = redact(text)
    assert hidden not in out and MASK in out


@pytest.mark.parametrize("text", [
    "Bearer authentication is required: send Authorization: Bearer <key>",
    "http://127.0.0.1:8080/v1/kbs/alpha@x",
    "unknown knowledge base 'secret'",
])
def test_ordinary_text_is_left_alone(text):
    assert redact(text) == text


def test_known_values_from_settings_and_the_environment(monkeypatch):
    class FakeSettings:
        model_fields = {"qdrant_api_key": None, "database_url": None, "name": None}
        qdrant_api_key = SecretStr("plain-qdrant-value")
        database_url = SecretStr("postgresql://u:p%40ss-word@h/d")
        name = "not a secret"

    redaction.register_settings(FakeSettings())
    assert redact("key plain-qdrant-value; pw p@ss-word and p%40ss-word") == f"key {MASK}; pw {MASK} and {MASK}"
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "env-token-value-1")
    assert redact("the token is env-token-value-1") == f"the token is {MASK}"
    monkeypatch.setenv("SHORT_KEY", "abc")  # too short to be registered: would mangle every line
    assert redact("abc") == "abc"


def test_stdlib_records_are_redacted_at_creation_whatever_prints_them():
    redaction.register("stdlib-secret-value")
    redaction.install_log_redaction()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("quivr_pipelines_tests.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("failed with %s", "stdlib-secret-value")
        try:
            raise RuntimeError("upstream said stdlib-secret-value")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    assert "stdlib-secret-value" not in stream.getvalue()
    assert "failed with [REDACTED]" in stream.getvalue() and "RuntimeError: upstream said [REDACTED]" in stream.getvalue()


def test_the_filter_redacts_a_single_handler():
    redaction.register("filter-secret-value")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "v=%s", ("filter-secret-value",), None)
    record._quivr_redacted = False
    assert redaction.RedactingFilter().filter(record) and record.getMessage() == f"v={MASK}"


def test_events_are_redacted_before_json_rendering(capsys):
    from quivr_pipelines.core.events import event_logger

    redaction.register("événement-secret")  # JSON would escape it to \\u00e9...
    event_logger().warning("probe", detail={"nested": ["événement-secret"]})
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["detail"] == {"nested": [MASK]}
