-- The two arrays a batch row keeps of its items (migration 0020: 500 ids, 500 IntaSend references) are
-- about 16 KB together, so PostgreSQL compresses them on every batch initiated: with lz4 where the server
-- has it, as the large answers already are (migration 0017), at about half of pglz's cost for these values
-- (docs/performance.md). Values already stored keep their compression; nothing is rewritten.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE provider_batches
            ALTER COLUMN item_ids SET COMPRESSION lz4,
            ALTER COLUMN request_reference_ids SET COMPRESSION lz4;
    END IF;
END $$;
