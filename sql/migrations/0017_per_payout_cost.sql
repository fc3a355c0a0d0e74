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

-- Item writes as HOT updates (heap-only: no new entry in any index). A batch's items are written three
-- times (references, SUBMITTED, outcome); an update can be HOT only when no indexed column, predicates of
-- partial indexes included, changes value. `status` changes in the last two, and was in the predicate of
-- both review indexes: they now read `needs_review`, which changes only when an item enters or leaves
-- NEEDS_REVIEW. Queries that want those indexes say `needs_review` (it is `status = 'NEEDS_REVIEW'`).
-- Adding a stored column rewrites payroll_items under an exclusive lock: run this migration when the
-- service is stopped (docs/operations.md). fillfactor leaves room on each page for the new versions of its
-- rows (pages written from now on).
ALTER TABLE payroll_items
    ADD COLUMN needs_review boolean GENERATED ALWAYS AS (status = 'NEEDS_REVIEW') STORED,
    SET (fillfactor = 60);
DROP INDEX payroll_items_review_idx;
CREATE INDEX payroll_items_review_idx ON payroll_items (payroll_id) WHERE needs_review;
DROP INDEX payroll_items_review_batch_idx;
CREATE INDEX payroll_items_review_batch_idx ON payroll_items (provider_batch_id) WHERE needs_review;
