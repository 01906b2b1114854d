-- PII handling per KB (off / detect / mask), and what each document was ingested with: a
-- document whose pii_mode differs from its KB's setting is ingested again by the next sync.
-- Existing rows were ingested without PII handling, hence the 'off' default.
ALTER TABLE knowledge_bases ADD COLUMN pii text NOT NULL DEFAULT 'off'
    CHECK (pii IN ('off', 'detect', 'mask'));
ALTER TABLE documents ADD COLUMN pii_mode text NOT NULL DEFAULT 'off';
-- Entity type -> occurrences found in the document's chunks (detect and mask), NULL when off.
ALTER TABLE documents ADD COLUMN pii_entities jsonb;
-- Seconds spent analysing (and masking) the document's texts.
ALTER TABLE documents ADD COLUMN pii_seconds double precision;
