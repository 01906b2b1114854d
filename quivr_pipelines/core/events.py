"""Structured JSON events (structlog) on the `quivr_pipelines.events` logger.

One line per event, e.g. {"event": "ingestion_failed", "filename": ..., "error_type": ...,
"error_message": ..., "kb": ..., "timestamp": ...}: grep-able, and shipped as-is by any log stack.

Every value of every event is redacted (`core.redaction`: known secrets and key-like patterns)
before it is rendered, and building the logger installs the same redaction on every stdlib log
record of the process.

The event logger is a private structlog logger with its own processors: structlog's global
configuration (`structlog.configure`) belongs to the host application (Dagster, the query
service's host, a notebook) and is neither read nor changed here.
"""

from __future__ import annotations

import functools
import logging
import sys

import structlog

from quivr_pipelines.core import redaction

LOGGER_NAME = "quivr_pipelines.events"


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when the event is emitted, not when logging was set
    up: Dagster's compute-log capture and test harnesses swap `sys.stderr`, and a handler bound
    to an old one writes where nobody reads."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


@functools.cache
def event_logger() -> structlog.stdlib.BoundLogger:
    """The events logger, built once: one handler on `quivr_pipelines.events`, not propagated
    (the line is already the whole event; a root handler would print it a second time)."""
    redaction.install_log_redaction()
    handler = _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return structlog.stdlib.BoundLogger(
        logger,
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redaction.structlog_processor,  # before rendering: JSON escaping would hide a secret's text
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        context={},
    )


def ingestion_failed(*, kb: str, object_key: str, error_type: str, error_message: str, status: str) -> None:
    event_logger().warning(
        "ingestion_failed", kb=kb, filename=object_key, error_type=error_type,
        error_message=error_message, status=status,
    )


def ingestion_warning(*, kb: str, object_key: str, warning_type: str, warning: str, pages: int | None,
                      pages_with_text: int | None, unread_pages: list[int]) -> None:
    """An ingested document that lacks something (pages no reader could read): searchable, not whole."""
    event_logger().warning(
        "ingestion_warning", kb=kb, filename=object_key, warning_type=warning_type, warning=warning,
        pages=pages, pages_with_text=pages_with_text, unread_pages=unread_pages,
    )
