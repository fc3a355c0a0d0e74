-- emit_payroll_event --
-- THE call made wherever a payroll becomes final (migration 0016, payrun_payroll_event): the payroll's event
-- is queued when its employer has a callback, once per final status; the outbox row's id or NULL.
SELECT payrun_payroll_event($1);

-- set_callback --
-- The employer's callback URL ($2) and signing secret ($3); NULL when no employer has the id $1.
INSERT INTO employer_callbacks (employer_id, url, secret)
SELECT id, $2, $3 FROM employers WHERE id = $1
ON CONFLICT (employer_id) DO UPDATE SET url = excluded.url, secret = excluded.secret, updated_at = now()
RETURNING employer_id, url, created_at, updated_at;

-- set_callback_url --
-- A new URL, the secret kept (`--keep-secret`); NULL when the employer has no callback yet.
UPDATE employer_callbacks SET url = $2, updated_at = now() WHERE employer_id = $1
RETURNING employer_id, url, created_at, updated_at;

-- clear_callback --
-- No more events for this employer; events already queued end `dead` at their next attempt.
DELETE FROM employer_callbacks WHERE employer_id = $1 RETURNING url;

-- employer_exists --
SELECT EXISTS (SELECT 1 FROM employers WHERE id = $1);

-- callback_config --
-- What the employer may see of its callback: never the secret.
SELECT url, created_at, updated_at FROM employer_callbacks WHERE employer_id = $1;

-- delivery_target --
-- Where an event row of this payroll goes now, and the secret that signs it (the current ones: a URL changed
-- or a secret rotated after the event was queued applies to its next attempt).
SELECT c.url, c.secret
FROM payrolls p JOIN employer_callbacks c ON c.employer_id = p.employer_id
WHERE p.id = $1;

-- event_attempt --
-- One delivery attempt, for auditors (outbox_attempts, action `deliver`); the caller holds the row's lease.
INSERT INTO outbox_attempts (outbox_id, attempt, dispatcher, action, outcome, detail)
VALUES ($1, $2, $3, 'deliver', $4, $5);

-- event_retry_or_die --
-- A failed delivery: due again in $5 seconds, or `dead` once it was tried $3 times or queued more than $4
-- seconds ago. `errors` counts the failures in a row. Fenced by the lease token ($2). Returns the new status.
UPDATE outbox
SET status = CASE WHEN attempts >= $3 OR created_at < now() - make_interval(secs => $4) THEN 'dead'
                  ELSE 'pending' END,
    processed_at = CASE WHEN attempts >= $3 OR created_at < now() - make_interval(secs => $4) THEN now() END,
    available_at = now() + make_interval(secs => $5),
    locked_by = NULL, locked_until = NULL, lease_token = NULL,
    last_error = $6, errors = errors + 1
WHERE id = $1 AND lease_token = $2 AND status = 'in_progress'
RETURNING status;
