-- insert_employer --
-- Only the SHA-256 of the API key is stored; the key itself is shown once.
INSERT INTO employers (id, name, api_key_hash) VALUES ($1, $2, $3);

-- employer_by_key_hash --
SELECT id, name FROM employers WHERE api_key_hash = $1;
