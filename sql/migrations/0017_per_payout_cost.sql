-- IntaSend's initiate answer, its bytes as received, kept once per batch so that whoever approves it (the
-- dispatcher that initiated, or another one after a funds wait or a crash) sends the whole answer back
-- unchanged, transactions included, as IntaSend's official SDKs do. Written in the fenced transaction that
-- persists the batch; NULL for batches initiated before this migration (they approve from
-- initiate_response, as before). Stored out of line without compression: it is written once and read at
-- most a few times, and compressing 500 transactions costs PostgreSQL CPU on every batch.
ALTER TABLE provider_batches ADD COLUMN initiate_body bytea;
ALTER TABLE provider_batches ALTER COLUMN initiate_body SET STORAGE EXTERNAL;
