-- IntaSend's initiate answer, its bytes as received, kept once per batch so that whoever approves it (the
-- dispatcher that initiated, or another one after a funds wait or a crash) sends the whole answer back
-- unchanged, transactions included, as IntaSend's official SDKs do. Written in the fenced transaction that
-- persists the batch; NULL for batches initiated before this migration (they approve from
-- initiate_response, as before).
ALTER TABLE provider_batches ADD COLUMN initiate_body bytea;

-- The final status answer (about 260 KB for 500 transactions) is kept for audit, never queried by payrun:
-- as json (the text as received, checked to be JSON) PostgreSQL does not build jsonb's binary form of it,
-- which cost about 6 ms of CPU per batch (docs/performance.md). jsonb functions need `last_status::jsonb`.
ALTER TABLE provider_batches ALTER COLUMN last_status TYPE json USING last_status::json;

-- Both large values compressed with lz4 where the server has it: 8 times smaller, at a third of pglz's CPU
-- (and cheaper than storing them uncompressed, which writes 8 times the TOAST chunks). Values already
-- stored keep their compression.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE provider_batches
            ALTER COLUMN initiate_body SET COMPRESSION lz4,
            ALTER COLUMN last_status SET COMPRESSION lz4;
    END IF;
END $$;
