"""Errors are data: every reason a document is not ingested has a stable `error_type`.

The status and error-type vocabularies live here, once, as `StrEnum`s: a member equals its
string (`DocumentStatus.INGESTED == "ingested"`), so catalog rows, JSON events, Dagster metadata
and the query service keep reading and writing the same plain strings.
"""

from __future__ import annotations

from enum import StrEnum


class DocumentStatus(StrEnum):
    """A document's state. The catalog stores PENDING, INGESTED, FAILED, SKIPPED and DELETED
    (the CHECK constraint of `documents.status`); UNCHANGED and MISSING are outcomes of one run
    only, when nothing was done and nothing is written."""

    PENDING = "pending"  # requested (or reset by reconciliation), not processed yet
    INGESTED = "ingested"
    SKIPPED = "skipped"  # a kind of document we deliberately do not index
    FAILED = "failed"  # should have worked, or the input is damaged
    DELETED = "deleted"  # gone from the store; points removed
    UNCHANGED = "unchanged"  # the last outcome still stands
    MISSING = "missing"  # gone since it was listed; deleting is the sync's decision


class ErrorType(StrEnum):
    EMPTY = "empty"
    NO_TEXT = "no_text"
    UNSUPPORTED_TYPE = "unsupported_type"
    TOO_LARGE = "too_large"
    TOO_COMPLEX = "too_complex"  # past a static guard or the parser's memory limit (zip bomb, 1M cells)
    PARSE_TIMEOUT = "parse_timeout"  # past the per-document parse wall-time limit
    ENCRYPTED = "encrypted"
    CORRUPT = "corrupt"
    HOSTILE_KEY = "hostile_key"
    PARSE_ERROR = "parse_error"
    PII_ERROR = "pii_error"  # PII detection/masking failed: nothing of the document is written
    EMBEDDING_ERROR = "embedding_error"
    VECTOR_STORE_ERROR = "vector_store_error"
    STORAGE_ERROR = "storage_error"
    NOT_FOUND = "not_found"


# "skipped" means nothing is wrong with the system: the document is of a kind we deliberately do
# not index (empty, unsupported); "failed" means it should have worked or the input is damaged.
ERROR_STATUS: dict[ErrorType, DocumentStatus] = {
    ErrorType.EMPTY: DocumentStatus.SKIPPED,
    ErrorType.NO_TEXT: DocumentStatus.SKIPPED,
    ErrorType.UNSUPPORTED_TYPE: DocumentStatus.SKIPPED,
    ErrorType.TOO_LARGE: DocumentStatus.SKIPPED,
    ErrorType.TOO_COMPLEX: DocumentStatus.SKIPPED,
    ErrorType.PARSE_TIMEOUT: DocumentStatus.FAILED,
    ErrorType.ENCRYPTED: DocumentStatus.FAILED,
    ErrorType.CORRUPT: DocumentStatus.FAILED,
    ErrorType.HOSTILE_KEY: DocumentStatus.FAILED,
    ErrorType.PARSE_ERROR: DocumentStatus.FAILED,
    ErrorType.PII_ERROR: DocumentStatus.FAILED,
    ErrorType.EMBEDDING_ERROR: DocumentStatus.FAILED,
    ErrorType.VECTOR_STORE_ERROR: DocumentStatus.FAILED,
    ErrorType.STORAGE_ERROR: DocumentStatus.FAILED,
    ErrorType.NOT_FOUND: DocumentStatus.FAILED,
}

# Failures worth retrying when the source has not changed: the system failed, not the input.
TRANSIENT_ERRORS: frozenset[ErrorType] = frozenset({
    ErrorType.EMBEDDING_ERROR, ErrorType.VECTOR_STORE_ERROR, ErrorType.STORAGE_ERROR, ErrorType.NOT_FOUND,
})


class IngestionError(Exception):
    """A document-level failure with a precise, user-facing reason."""

    def __init__(self, error_type: ErrorType | str, message: str):
        try:
            self.error_type = ErrorType(error_type)
        except ValueError:
            raise ValueError(f"unknown error_type {error_type!r}") from None
        super().__init__(message)
        self.message = message

    def __reduce__(self):  # crosses process boundaries (parser workers)
        return (IngestionError, (self.error_type, self.message))

    @property
    def status(self) -> DocumentStatus:
        return ERROR_STATUS[self.error_type]

    def __str__(self) -> str:
        return f"{self.error_type}: {self.message}"
