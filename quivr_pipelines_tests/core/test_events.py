"""Structured events: one JSON line on the current stderr, whatever structlog the host set up."""

import json

import structlog

from quivr_pipelines.core import events
from quivr_pipelines.core.errors import DocumentStatus, ErrorType


def emit() -> None:
    events.ingestion_failed(kb="kb", object_key="a/b.docx", error_type=ErrorType.CORRUPT,
                            error_message="damaged .docx", status=DocumentStatus.FAILED)


def test_one_json_line_per_event(capsys):
    emit()
    lines = capsys.readouterr().err.splitlines()
    event = json.loads(lines[-1])
    assert event.pop("timestamp").endswith("Z")
    assert event == {"event": "ingestion_failed", "level": "warning", "kb": "kb", "filename": "a/b.docx",
                     "error_type": "corrupt", "error_message": "damaged .docx", "status": "failed"}
    assert lines[-1] == json.dumps(json.loads(lines[-1]), sort_keys=True)  # keys sorted, one line


def test_the_host_structlog_configuration_is_neither_used_nor_changed(capsys):
    host = [structlog.processors.KeyValueRenderer()]
    structlog.configure(processors=host)
    try:
        emit()
        assert structlog.get_config()["processors"] == host
    finally:
        structlog.reset_defaults()
    assert json.loads(capsys.readouterr().err.splitlines()[-1])["event"] == "ingestion_failed"
