-- Collection generations (issue 11): a KB's alias serves one generation; a re-embedding or
-- re-chunking builds the next one beside it and swaps the alias when its gates pass.
-- state: building (at most one per KB) -> serving (exactly one per KB once ingested) ->
-- retired (kept for the rollback window, can serve again) -> deleted (collection dropped);
-- failed: a build given up (its collection kept for inspection until cleanup).
CREATE TABLE collection_generations (
    kb                  text NOT NULL REFERENCES knowledge_bases(name),
    generation          integer NOT NULL CHECK (generation >= 0),
    collection          text NOT NULL,
    embedding_model     text NOT NULL,          -- the embedding fingerprint provider:model:dims
    dimensions          integer NOT NULL,
    embedder_spec       text,                   -- how to build the embedder (registry spec)
    chunking            jsonb NOT NULL DEFAULT '{}'::jsonb,  -- chunk sizes and context headers
    mode                text NOT NULL DEFAULT 'initial' CHECK (mode IN ('initial', 'copy', 'rechunk', 'index')),
    state               text NOT NULL CHECK (state IN ('building', 'serving', 'retired', 'failed', 'deleted')),
    source_generation   integer,                -- the serving generation it was built from
    reason              text,                   -- why a build failed or a swap was refused
    dagster_run_id      text,
    cursor              text,                   -- copy: the next point id of the source scroll
    chunks_total        integer NOT NULL DEFAULT 0,
    chunks_done         integer NOT NULL DEFAULT 0,
    chunks_cached       integer NOT NULL DEFAULT 0,
    chunks_embedded     integer NOT NULL DEFAULT 0,
    tokens              bigint NOT NULL DEFAULT 0,
    build_seconds       double precision NOT NULL DEFAULT 0,
    caught_up_at        timestamptz,            -- catalog changes up to here are in the generation
    gates               jsonb,                  -- the last gate results (check name -> passed, description)
    golden_set          jsonb,                  -- the queries its quality gate used, kept with it
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    serving_since       timestamptz,
    retired_at          timestamptz,
    deleted_at          timestamptz,
    PRIMARY KEY (kb, generation),
    UNIQUE (collection)
);
CREATE UNIQUE INDEX collection_generations_one_building ON collection_generations (kb) WHERE state = 'building';
CREATE UNIQUE INDEX collection_generations_one_serving ON collection_generations (kb) WHERE state = 'serving';

-- Per document, what a re-chunking generation holds (its chunk counts differ from the catalog's,
-- which describe the serving generation until the swap).
CREATE TABLE generation_documents (
    kb              text NOT NULL,
    generation      integer NOT NULL,
    object_key      text NOT NULL,
    status          text NOT NULL,
    chunk_count     integer NOT NULL DEFAULT 0,
    token_count     integer NOT NULL DEFAULT 0,
    sha256          text,
    error_type      text,
    failure_reason  text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kb, generation, object_key),
    FOREIGN KEY (kb, generation) REFERENCES collection_generations (kb, generation) ON DELETE CASCADE
);

-- The catch-up before a swap reads the documents changed since the build started.
CREATE INDEX documents_kb_updated ON documents (kb, updated_at);
