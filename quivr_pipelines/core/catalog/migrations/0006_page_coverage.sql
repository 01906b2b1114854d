-- Page coverage of PDFs (issue 10): pages with text of page_count, and the pages no reader could
-- read. A document with unread pages is ingested (the rest of it is searchable) with a warning,
-- never silently complete. NULL / 0 / NULL for other formats and for rows written before.
ALTER TABLE documents ADD COLUMN pages_with_text integer;
ALTER TABLE documents ADD COLUMN unread_pages integer NOT NULL DEFAULT 0;
ALTER TABLE documents ADD COLUMN warning text;
CREATE INDEX documents_warnings ON documents (kb) WHERE warning IS NOT NULL;
