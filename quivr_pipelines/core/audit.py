"""Administrative operations leave an audit row: who did what to what, and how it ended.

One small function, `record`, for every administrative path: the CLI (`keys create`,
`keys revoke`), Dagster jobs (prune) and later restore and re-embedding swap/rollback. The actor
is `cli:<os user>` from the CLI and `dagster run <run id>` from a job. Rows go to `admin_audit`
(migration 0004), every text field cleaned (`clean_text`) and redacted: an audit row is read by
more people than the secrets it could hold.

`record` never raises: the operation it describes has already happened, and failing the command
after the fact would only hide that it did. A row that cannot be written is logged as an error
event (`admin_audit_failed`) with the same fields.
"""

from __future__ import annotations

import getpass
import json
import os

from quivr_pipelines.core.redaction import redact, redact_value

TEXT_LIMIT = 1024


def clean_text(value: str | None, limit: int = TEXT_LIMIT) -> str | None:
    """A string PostgreSQL accepts and a terminal shows safely: NUL and invalid UTF-8
    (lone surrogates, e.g. from `os.fsdecode` of bad bytes) escaped, length bounded."""
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(value) > limit:
        value = value[: max(0, limit - 1)] + "…"
    return value


def clean_value(value, limit: int = TEXT_LIMIT):
    """`clean_text` through dicts and lists (JSON details: jsonb refuses \\u0000 and lone surrogates)."""
    if isinstance(value, str):
        return clean_text(value, limit)
    if isinstance(value, dict):
        return {clean_text(str(k), 128): clean_value(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_value(v, limit) for v in value]
    return value


def cli_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers with an arbitrary uid)
        user = f"uid {os.getuid()}"
    return f"cli:{user}"


def run_actor(run_id: str) -> str:
    return f"dagster run {run_id}"


def record(db, *, actor: str, action: str, target: str | None, outcome: str,
           detail: dict | None = None) -> bool:
    """Write one `admin_audit` row; False (and an error event) when it could not be written."""
    row = (clean_text(redact(actor), 256), clean_text(action, 128),
           clean_text(redact(target), TEXT_LIMIT) if target is not None else None,
           clean_text(outcome, 128), json.dumps(clean_value(redact_value(detail or {})), default=str))
    try:
        with db.transaction() as conn:
            conn.execute("INSERT INTO admin_audit (actor, action, target, outcome, detail)"
                         " VALUES (%s, %s, %s, %s, %s::jsonb)", row)
        return True
    except Exception as exc:  # noqa: BLE001 - the operation happened; say the row is missing
        from quivr_pipelines.core.events import event_logger

        event_logger().error("admin_audit_failed", actor=row[0], action=row[1], target=row[2],
                             outcome=row[3], error_type=type(exc).__name__)
        return False


def rows(db, action: str | None = None, limit: int = 100) -> list[dict]:
    """The latest rows first (tests, `status`-style reports)."""
    from psycopg.rows import dict_row

    with db.transaction() as conn:
        cur = conn.cursor(row_factory=dict_row)
        if action:
            cur.execute("SELECT * FROM admin_audit WHERE action = %s ORDER BY id DESC LIMIT %s", (action, limit))
        else:
            cur.execute("SELECT * FROM admin_audit ORDER BY id DESC LIMIT %s", (limit,))
        return cur.fetchall()
