"""Secrets never leave the process: one `redact()` for every log line, error detail and audit row.

Two nets, because neither is enough alone:
- known values: every `SecretStr` of the settings (`register_settings`), every value an
  OpenAI-compatible client was given (`register`), and the values of environment variables whose
  names say they are secret (`*_KEY`, `*_TOKEN`, `*_SECRET`, `*PASSWORD*`, `*DATABASE_URL`, `*DSN`),
  read at redaction time so a key set after start-up is covered too; a DSN's password is
  registered on its own, since drivers quote the password without the URI;
- patterns for what no setting knows: `sk-...` provider keys, this project's `qvr_...` API keys,
  `Bearer` tokens, `scheme://user:password@` URIs, `password=...` in key-value DSNs and JSON.

The registry of known values is process-wide on purpose: a logging filter runs where no settings
object is at hand, and a secret registered once must be redacted from every later line. Values
shorter than MIN_SECRET_LENGTH are never registered (redacting "a" would mangle every line).

Stdlib logging: `install_log_redaction()` wraps the log record factory, so every record of every
logger is redacted when it is created, whichever handler (uvicorn's, Dagster's, a root handler
configured later) prints it; `RedactingFilter` is the same for a single handler.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import traceback
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

MASK = "[REDACTED]"
MIN_SECRET_LENGTH = 6
SECRET_ENV_NAME = re.compile(r"(_KEY|_TOKEN|_SECRET|PASSWORD|PASSWD|DATABASE_URL|_DSN)$|^(DSN|PGPASSWORD)$",
                             re.IGNORECASE)
PATTERNS = [
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"), "sk-" + MASK),  # OpenAI-style provider keys
    (re.compile(r"\bqvr_[A-Za-z0-9_\-]{6,}"), "qvr_" + MASK),  # this project's API keys
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]{16,}"), r"\1 " + MASK),  # not "Bearer authentication"
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@'\"]*:)[^\s/@'\"]+@"), r"\1" + MASK + "@"),
    (re.compile(r"(?i)\b(password|passwd|pwd|api[_-]?key|secret|access[_-]?token)(\"?'?\s*[=:]\s*\"?'?)"
                r"[^\s\"',;&}]+"), r"\1\2" + MASK),
]
# Substrings one of PATTERNS needs: a lower-cased `in` test is ~50x cheaper than the regexes.
TRIGGERS = ("sk-", "qvr_", "bearer", "://", "passw", "pwd", "apikey", "api_key", "api-key", "secret", "token")

_lock = threading.Lock()
_known: set[str] = set()


def register(*values: str | SecretStr | None) -> None:
    """Remember secret values so that every later `redact()` removes them."""
    found = set()
    for value in values:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        found.update(_with_parts(value))
    if found - _known:
        with _lock:
            _known.update(found)


def register_settings(settings) -> None:
    """Every `SecretStr` field of a settings object (keys, DSNs), with a DSN's password alone."""
    register(*(getattr(settings, name, None) for name in type(settings).model_fields
               if isinstance(getattr(settings, name, None), SecretStr)))


def _with_parts(value: str | None) -> set[str]:
    if not value or len(value) < MIN_SECRET_LENGTH:
        return set()
    found = {value}
    if "://" in value:
        try:
            password = urlsplit(value).password
        except ValueError:
            password = None
        for form in (password, unquote(password) if password else None):
            if form and len(form) >= MIN_SECRET_LENGTH:
                found.add(form)
    return found


_env_cache: dict = {"key": None, "names": (), "secrets": frozenset()}
_sorted_cache: dict = {"key": None, "value": []}


def _environment_secrets() -> frozenset[str]:
    """Re-read only when the environment's size or a secret variable's value changed: a full scan
    per log line cost ~50 µs."""
    names = _env_cache["names"]
    key = (len(os.environ), tuple(os.environ.get(name) for name in names))
    if key != _env_cache["key"]:
        names = tuple(name for name in os.environ if SECRET_ENV_NAME.search(name))
        found = set()
        for name in names:
            found.update(_with_parts(os.environ[name]))
        _env_cache.update(names=names, secrets=frozenset(found),
                          key=(len(os.environ), tuple(os.environ.get(name) for name in names)))
    return _env_cache["secrets"]


def known_secrets() -> list[str]:
    """Longest first, so a DSN is masked whole before its password alone."""
    env, known = _environment_secrets(), frozenset(_known)
    if _sorted_cache["key"] != (env, known):
        _sorted_cache.update(key=(env, known), value=sorted(env | known, key=len, reverse=True))
    return _sorted_cache["value"]


def redact(text: str, secrets: list[str] | None = None) -> str:
    """`text` without known secrets and key-like patterns (`secrets`: `known_secrets()`, once
    for many strings)."""
    if not text or len(text) < MIN_SECRET_LENGTH:
        return text
    for secret in known_secrets() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    lowered = text.lower()
    if any(trigger in lowered for trigger in TRIGGERS):  # the patterns only where one could match
        for pattern, replacement in PATTERNS:
            text = pattern.sub(replacement, text)
    return text


def redact_value(value, secrets: list[str] | None = None):
    """`redact` through dicts, lists and tuples (structured log events, JSON details)."""
    if secrets is None:
        secrets = known_secrets()
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v, secrets) for v in value)
    return value


def summary(exc: BaseException, limit: int = 300) -> str:
    """An exception for an operator's log: its type and the first line of its message, redacted
    and clipped (drivers and HTTP clients put response bodies on the lines after the first)."""
    text = str(exc).strip().splitlines()
    return redact(f"{type(exc).__name__}: {text[0] if text else ''}")[:limit]


def protect(settings) -> None:
    """Register the settings' secrets and redact every stdlib log record from now on."""
    register_settings(settings)
    install_log_redaction()


def structlog_processor(logger, method_name: str, event_dict: dict) -> dict:
    """A structlog processor: every value of the event redacted (place it before the renderer)."""
    secrets = known_secrets()
    return {key: redact_value(value, secrets) for key, value in event_dict.items()}


class RedactingFilter(logging.Filter):
    """Redacts a record in place: its message with the arguments merged, its traceback and stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    if getattr(record, "_quivr_redacted", False):
        return record
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string must not lose the line
        message = f"{record.msg!r} {record.args!r}"
    record.msg, record.args = redact(message), None
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    record._quivr_redacted = True
    return record


_installed = threading.Event()


def install_log_redaction() -> None:
    """Every stdlib log record redacted at creation (idempotent, process-wide)."""
    with _lock:
        if _installed.is_set():
            return
        previous = logging.getLogRecordFactory()

        def factory(*args, **kwargs):
            return redact_record(previous(*args, **kwargs))

        logging.setLogRecordFactory(factory)
        _installed.set()


def contains_secret(text: str, secrets: Iterable[str]) -> list[str]:
    """The secrets found in `text` (tests and self-checks)."""
    return [s for s in secrets if s and s in text]
