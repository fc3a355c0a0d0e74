-- The operator console's throughput chart (GET /ops/overview) reads the IntaSend batches finished in the last
-- hour: an index on finished_at makes that a range scan instead of a scan of every batch ever sent. A batch
-- row is written once per IntaSend batch (up to INTASEND_BATCH_SIZE items), so the index costs the
-- dispatcher one entry per batch, nothing per item or per outbox row.
CREATE INDEX provider_batches_finished_idx ON provider_batches (finished_at) WHERE finished_at IS NOT NULL;
