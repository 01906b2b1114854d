-- Evaluation capability of an API key: `top_k` up to 100 (ordinary keys: 50), for retrieval
-- quality measurements through the query service (`quivr-pipelines keys create --evaluation`).
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS evaluation boolean NOT NULL DEFAULT false;
