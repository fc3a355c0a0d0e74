-- claim_key --
-- First statement of a request's transaction: take the (employer, key) row. A concurrent request with the
-- same key blocks here on the unique key until the first commits (then conflicts: it replays) or rolls back
-- (then it takes the key itself), so one key never does the work twice. The placeholder response is
-- replaced by store_response before commit; nobody outside the transaction ever sees it.
INSERT INTO idempotency_keys (employer_id, key, request_hash, response_status, response_body)
VALUES ($1, $2, $3, 0, '{}'::jsonb)
ON CONFLICT (employer_id, key) DO NOTHING
RETURNING true;

-- stored_response --
-- The committed first response to this key, replayed to a retry with the same request.
SELECT request_hash, response_status, response_body, response_headers
FROM idempotency_keys
WHERE employer_id = $1 AND key = $2;

-- store_response --
-- The response of the request that did the work, in the same transaction as the work itself.
UPDATE idempotency_keys
SET response_status = $3, response_body = $4, response_headers = $5
WHERE employer_id = $1 AND key = $2;
