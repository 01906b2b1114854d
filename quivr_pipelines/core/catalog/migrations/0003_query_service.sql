-- Query service: API keys (only a SHA-256 of the secret is stored), per-key token buckets for
-- rate limiting (shared by every worker process through this table), and the audit log.
CREATE TABLE api_keys (
    id                     text PRIMARY KEY,              -- public id, e.g. key_3f9a1c2b7d4e
    key_hash               bytea NOT NULL UNIQUE,         -- sha256 of the secret, never the secret
    name                   text NOT NULL,
    role                   text NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    kbs                    text[],                        -- NULL: every knowledge base
    rate_limit_per_minute  double precision,              -- NULL: QUIVR_RATE_LIMIT_PER_MINUTE
    rate_limit_burst       integer,                       -- NULL: QUIVR_RATE_LIMIT_BURST
    created_at             timestamptz NOT NULL DEFAULT now(),
    expires_at             timestamptz,                   -- NULL: never
    revoked_at             timestamptz
);

-- One token bucket per key, refilled lazily by the single UPDATE that also spends a token.
CREATE TABLE rate_limit_buckets (
    key_id        text PRIMARY KEY REFERENCES api_keys(id) ON DELETE CASCADE,
    tokens        double precision NOT NULL,
    refreshed_at  timestamptz NOT NULL,
    allowed       boolean NOT NULL
);

-- One row per API request (the key id, never the key).
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL,
    request_id  text NOT NULL,
    api_key_id  text,
    kb          text,
    action      text NOT NULL,
    method      text NOT NULL,
    path        text NOT NULL,
    status      integer NOT NULL,
    latency_ms  double precision NOT NULL,
    client      text
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_key_at ON audit_log (api_key_id, at);

-- The result cache's generation of a KB is max(documents.updated_at): one index probe.
CREATE INDEX documents_kb_updated_at ON documents (kb, updated_at);
