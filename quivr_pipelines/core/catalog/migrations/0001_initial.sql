-- Knowledge bases: an object-store prefix feeding one Qdrant collection (read through an alias
-- named after the KB). Chunk sizes are per KB.
CREATE TABLE knowledge_bases (
    name                        text PRIMARY KEY,
    chunk_max_characters        integer NOT NULL,
    chunk_new_after_characters  integer NOT NULL,
    chunk_combine_under_characters integer NOT NULL,
    chunk_overlap_characters    integer NOT NULL DEFAULT 0,
    collection                  text,
    embedding_model             text,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);

-- One row per object ever seen. status: pending / ingested / failed / skipped / deleted.
CREATE TABLE documents (
    kb               text NOT NULL REFERENCES knowledge_bases(name),
    object_key       text NOT NULL,
    etag             text,
    version_id       text,
    sha256           text,
    size_bytes       bigint,
    content_type     text,
    source_uri       text,
    status           text NOT NULL CHECK (status IN ('pending', 'ingested', 'failed', 'skipped', 'deleted')),
    error_type       text,
    failure_reason   text,
    page_count       integer,
    element_count    integer,
    chunk_count      integer NOT NULL DEFAULT 0,
    token_count      integer NOT NULL DEFAULT 0,
    parse_seconds    double precision,
    embed_seconds    double precision,
    write_seconds    double precision,
    total_seconds    double precision,
    collection       text,
    embedding_model  text,
    first_seen_at    timestamptz NOT NULL DEFAULT now(),
    ingested_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    dagster_run_id   text,
    -- Set when a run is requested for this etag, so the next sensor tick does not ask again
    -- while the run is queued; a request older than the sensor's timeout is asked again.
    requested_etag   text,
    requested_at     timestamptz,
    PRIMARY KEY (kb, object_key)
);
CREATE INDEX documents_kb_status ON documents (kb, status);

-- Every embedding call (and later every LLM call): the raw material of the cost reports.
CREATE TABLE usage_ledger (
    id                bigserial PRIMARY KEY,
    at                timestamptz NOT NULL DEFAULT now(),
    kind              text NOT NULL,
    provider          text NOT NULL,
    model             text NOT NULL,
    kb                text,
    prompt_tokens     integer NOT NULL DEFAULT 0,
    completion_tokens integer NOT NULL DEFAULT 0,
    inputs            integer NOT NULL DEFAULT 0,
    cached_inputs     integer NOT NULL DEFAULT 0,
    dagster_run_id    text,
    api_key_id        text
);
CREATE INDEX usage_ledger_at ON usage_ledger (at);
CREATE INDEX usage_ledger_kb_at ON usage_ledger (kb, at);

-- Embeddings of chunk texts, keyed by model fingerprint and sha256 of the text: unchanged
-- chunks are never embedded twice, whichever document or KB they come from.
CREATE TABLE embedding_cache (
    model        text NOT NULL,
    text_sha256  bytea NOT NULL,
    vector       bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, text_sha256)
);
