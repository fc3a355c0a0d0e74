-- start_payroll --
-- DRAFT → PROCESSING and the payroll's outbox rows in ONE statement, hence one atomic commit: one
-- `send_batch` row per batch of items, grouped by provider (IntaSend's provider is per batch), in item
-- order, at most $3 items a batch. The UPDATE's row lock makes a concurrent second call wait, then find the
-- payroll no longer DRAFT and write nothing. pg_notify (delivered at commit) wakes the dispatchers.
-- Each payload carries the employer's wallet_id as it is now (JSON null: the INTASEND_WALLET_ID default).
WITH started AS (
    UPDATE payrolls
    SET status = 'PROCESSING', processing_started_at = now(), updated_at = now()
    WHERE id = $1 AND employer_id = $2 AND status = 'DRAFT'
    RETURNING id
), enqueued AS (
    INSERT INTO outbox (payroll_id, kind, payload)
    SELECT $1, 'send_batch',
           jsonb_build_object('provider', provider, 'currency', 'KES', 'item_ids', jsonb_agg(id ORDER BY position),
                              'wallet_id', (SELECT wallet_id FROM employers WHERE id = $2))
    FROM (
        SELECT id, position, provider,
               (row_number() OVER (PARTITION BY provider ORDER BY position) - 1) / $3 AS chunk
        FROM payroll_items
        WHERE payroll_id IN (SELECT id FROM started)
    ) numbered
    GROUP BY provider, chunk
    ORDER BY min(position)
    RETURNING id
)
SELECT (SELECT count(*) FROM started) > 0 AS started,
       (SELECT count(*) FROM enqueued) AS rows,
       CASE WHEN EXISTS (SELECT 1 FROM started) THEN pg_notify('payrun_outbox', $1::text) END AS notified;

-- claim_batch --
-- Take up to $3 rows that are due: pending rows whose back-off has passed, in their turns across employers
-- (the view outbox_turns, migration 0010), and in_progress rows whose lease ran out (their dispatcher died or
-- stalled). Rows carried by another row's batch (`carried_by`) have no lease of their own and are never
-- claimed: their lead is. SKIP LOCKED lets dispatchers claim side by side without waiting on each other;
-- each partial index holds only live rows, so `done` rows cost the claim nothing.
-- Every claim mints a new lease_token: the fence that stops the previous holder from writing again.
-- $4: rows whose previous flow still runs in the claiming process (its lease ran out while it was paused):
-- never handed to that process again until the old flow has ended, so a process runs one flow per row.
-- Payout rows (`send_batch`) and employer events (`deliver_event`, migration 0016) have separate limits, $3
-- and $5: an event never takes a payout's place, and payouts keep their order (outbox_turns holds only
-- send_batch rows). Events are taken oldest due first, pending or with a lease that ran out, the same lease.
WITH pending AS (
    SELECT o.id FROM outbox o
    JOIN outbox_turns t ON t.id = o.id
    WHERE o.status = 'pending' AND o.id <> ALL($4::bigint[])
    ORDER BY t.turn, t.available_at, t.id
    LIMIT $3
    FOR UPDATE OF o SKIP LOCKED
), expired AS (
    SELECT id FROM outbox
    WHERE status = 'in_progress' AND locked_until < now() AND id <> ALL($4::bigint[]) AND kind = 'send_batch'
    ORDER BY locked_until
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), events_pending AS (
    SELECT id FROM outbox
    WHERE status = 'pending' AND kind = 'deliver_event' AND available_at <= now() AND id <> ALL($4::bigint[])
    ORDER BY available_at, id
    LIMIT $5
    FOR UPDATE SKIP LOCKED
), events_expired AS (
    SELECT id FROM outbox
    WHERE status = 'in_progress' AND locked_until < now() AND id <> ALL($4::bigint[]) AND kind = 'deliver_event'
    ORDER BY locked_until
    LIMIT $5
    FOR UPDATE SKIP LOCKED
), due AS (
    (SELECT id FROM pending UNION ALL SELECT id FROM expired LIMIT $3)
    UNION ALL
    (SELECT id FROM events_pending UNION ALL SELECT id FROM events_expired LIMIT $5)
)
UPDATE outbox o
SET status = 'in_progress',
    locked_by = $1,
    locked_until = now() + make_interval(secs => $2),
    lease_token = gen_random_uuid(),
    attempts = o.attempts + 1
FROM due
WHERE o.id = due.id
RETURNING o.id, o.payroll_id, o.kind, o.payload, o.attempts, o.errors, o.lease_token,
          (SELECT p.employer_id FROM payrolls p WHERE p.id = o.payroll_id) AS employer_id;

-- next_due --
-- Seconds until the next row is due (a back-off ending or a lease running out), for an idle dispatcher's
-- sleep; null when nothing is live. Reads only the two partial indexes.
SELECT extract(epoch FROM least(
    (SELECT min(available_at) FROM outbox WHERE status = 'pending'),
    (SELECT min(locked_until) FROM outbox WHERE status = 'in_progress')
) - now())::float8;

-- next_due_of_kinds --
-- next_due for some kinds only: $1 payout rows, $2 event rows (a dispatcher with no room for one kind does not
-- wake up for it). The same two partial indexes, read in order until a row of a wanted kind.
SELECT extract(epoch FROM least(
    (SELECT min(available_at) FROM outbox
     WHERE status = 'pending' AND CASE WHEN kind = 'deliver_event' THEN $2::boolean ELSE $1::boolean END),
    (SELECT min(locked_until) FROM outbox
     WHERE status = 'in_progress' AND CASE WHEN kind = 'deliver_event' THEN $2::boolean ELSE $1::boolean END)
) - now())::float8;

-- extend_leases --
-- Heartbeat: push the lease of every row this dispatcher still holds; rows taken over are not returned.
UPDATE outbox o
SET locked_until = now() + make_interval(secs => $2)
FROM unnest($3::bigint[], $4::uuid[]) AS held(id, token)
WHERE o.id = held.id AND o.lease_token = held.token AND o.locked_by = $1 AND o.status = 'in_progress'
RETURNING o.id;

-- hold_lease --
-- Fence check inside a transaction: lock the row if and only if we still hold its lease.
SELECT id FROM outbox
WHERE id = $1 AND lease_token = $2 AND status = 'in_progress' AND locked_until > now()
FOR UPDATE;

-- release --
-- Give the row back to the queue, due again at now() + $3 seconds (a long wait or a retry back-off).
-- `errors` counts consecutive failures: a failure adds one, a release after progress starts again at 0.
UPDATE outbox
SET status = 'pending', locked_by = NULL, locked_until = NULL, lease_token = NULL,
    available_at = now() + make_interval(secs => $3),
    last_error = coalesce($4, last_error),
    errors = CASE WHEN $5 THEN errors + 1 ELSE 0 END
WHERE id = $1 AND lease_token = $2 AND status = 'in_progress'
RETURNING id;

-- finish --
-- The row is done (or dead): its last outcome is recorded in the same transaction as the item states.
UPDATE outbox
SET status = $3, locked_by = NULL, locked_until = NULL, lease_token = NULL,
    processed_at = now(), last_error = coalesce($4, last_error)
WHERE id = $1 AND lease_token = $2 AND status = 'in_progress'
RETURNING id;

-- carried_rows --
-- The rows a lead row's batch carries (gathered by gather_rows): finished with it, never claimed alone.
SELECT id, payroll_id, payload FROM outbox WHERE carried_by = $1 AND status = 'in_progress' ORDER BY id;
