"""Structured JSON events (structlog) on the `quivr_pipelines` logger.

One line per event, e.g. {"event": "ingestion_failed", "filename": ..., "error_type": ...,
"error_message": ..., "kb": ..., "timestamp": ...}: grep-able, and shipped as-is by any log stack.
"""

from __future__ import annotations

import logging
import sys

import structlog

_configured = False


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


def _configure() -> None:
    global _configured
    if _configured:
        return
    handler = _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("quivr_pipelines.events")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    _configured = True


def event_logger():
    _configure()
    return structlog.get_logger("quivr_pipelines.events")


def ingestion_failed(*, kb: str, object_key: str, error_type: str, error_message: str, status: str) -> None:
    event_logger().warning(
        "ingestion_failed", kb=kb, filename=object_key, error_type=error_type,
        error_message=error_message, status=status,
    )
