-- Object-store sync: how many consecutive listing passes missed a document (its points are
-- deleted only after QUIVR_SYNC_DELETE_AFTER_MISSES of them), and when it was deleted.
ALTER TABLE documents ADD COLUMN missing_passes integer NOT NULL DEFAULT 0;
ALTER TABLE documents ADD COLUMN deleted_at timestamptz;
-- Listing passes compare key ranges in byte order (as S3 lists them), whatever the collation.
CREATE INDEX documents_kb_key_c ON documents (kb, (object_key COLLATE "C"));
