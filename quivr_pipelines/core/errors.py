"""Errors are data: every reason a document is not ingested has a stable `error_type`."""

from __future__ import annotations

# error_type -> catalog status. "skipped" means nothing is wrong with the system: the document
# is of a kind we deliberately do not index (empty, unsupported); "failed" means it should have
# worked or the input is damaged.
ERROR_STATUS = {
    "empty": "skipped",
    "no_text": "skipped",
    "unsupported_type": "skipped",
    "too_large": "skipped",
    "encrypted": "failed",
    "corrupt": "failed",
    "hostile_key": "failed",
    "parse_error": "failed",
    "embedding_error": "failed",
    "vector_store_error": "failed",
    "storage_error": "failed",
    "source_changed": "failed",
    "not_found": "failed",
}


class IngestionError(Exception):
    """A document-level failure with a precise, user-facing reason."""

    def __init__(self, error_type: str, message: str):
        if error_type not in ERROR_STATUS:
            raise ValueError(f"unknown error_type {error_type!r}")
        super().__init__(message)
        self.error_type = error_type
        self.message = message

    def __reduce__(self):  # crosses process boundaries (parser workers)
        return (IngestionError, (self.error_type, self.message))

    @property
    def status(self) -> str:
        return ERROR_STATUS[self.error_type]

    def __str__(self) -> str:
        return f"{self.error_type}: {self.message}"
