-- Administrative operations (key create/revoke, prune, restore, re-embedding swap/rollback), from
-- the CLI and from Dagster runs: who, what, on what, and how it ended.
CREATE TABLE admin_audit (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text NOT NULL,              -- "cli:<os user>" or "dagster run <run id>"
    action   text NOT NULL,              -- e.g. keys.create, keys.revoke, prune
    target   text,                       -- e.g. a key id, a KB, "all KBs"
    outcome  text NOT NULL,              -- ok / not_found / failed / ...
    detail   jsonb NOT NULL DEFAULT '{}' -- redacted figures (never a secret)
);
CREATE INDEX admin_audit_at ON admin_audit (at);

-- Audit/usage rows the database refused even after sanitising, isolated by the batch writer:
-- the row redacted and escaped, and why it was refused; the rest of its batch is written.
CREATE TABLE audit_poison (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    table_name  text NOT NULL,           -- audit_log / usage_ledger
    error       text NOT NULL,           -- SQLSTATE and class, redacted message
    row_data    jsonb NOT NULL           -- the row, every text escaped, redacted and clipped
);
