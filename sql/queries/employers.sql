-- insert_employer --
-- Only the SHA-256 of the API key is stored; the key itself is shown once.
INSERT INTO employers (id, name, api_key_hash) VALUES ($1, $2, $3);

-- employer_by_key_hash --
SELECT id, name FROM employers WHERE api_key_hash = $1;

-- set_employer_wallet --
-- The employer's own IntaSend wallet ($2), or NULL for the INTASEND_WALLET_ID default. Payrolls already
-- started keep the wallet_id their outbox payloads carry; only payrolls started later use the new one.
-- The old value is read under the row's lock, so two concurrent changes each report what they replaced.
UPDATE employers e SET wallet_id = $2
FROM (SELECT id, wallet_id FROM employers WHERE id = $1 FOR UPDATE) old
WHERE e.id = old.id
RETURNING e.id, e.name, e.wallet_id, old.wallet_id AS previous_wallet_id;
