-- batch_items --
-- The items one outbox row carries, in payroll order, with what a provider request needs.
SELECT i.id, i.position, i.name, i.account, i.amount, i.provider, i.bank_code, i.narrative, i.status,
       i.request_reference_id
FROM payroll_items i
JOIN unnest($1::bigint[]) AS wanted(id) ON wanted.id = i.id
ORDER BY i.position;

-- batch_for_row --
SELECT id, tracking_id, nonce, stage, initiate_response, initiate_body, status_polls, status_code, approved_at,
       callback_at
FROM provider_batches WHERE outbox_id = $1;

-- insert_batch --
-- Persist the initiated batch before anything can approve it. The unique outbox_id means one live batch
-- per row: a dispatcher that lost the race gets nothing back and abandons its own (unapproved) batch.
-- $6: the initiate answer's bytes as received, which the approve sends back (migration 0017); $7, $8: the
-- items sent and IntaSend's reference of each (migration 0020), linked to the items at `approving`.
INSERT INTO provider_batches (outbox_id, payroll_id, tracking_id, nonce, stage, initiate_response, initiate_body,
                              item_ids, request_reference_ids)
VALUES ($1, $2, $3, $4, 'initiated', $5, $6, $7, $8)
ON CONFLICT (outbox_id) DO NOTHING
RETURNING id;

-- batch_items_sent --
-- The items a batch was initiated with (provider_batches.item_ids, migration 0020), each with IntaSend's
-- reference for it, in payroll order: what a flow that did not initiate the batch approves and follows.
SELECT i.id, i.position, i.name, i.account, i.amount, i.provider, i.bank_code, i.narrative, i.status,
       m.ref
FROM provider_batches b
CROSS JOIN LATERAL unnest(b.item_ids, b.request_reference_ids) AS m(id, ref)
JOIN payroll_items i ON i.id = m.id
WHERE b.id = $1
ORDER BY i.position;

-- set_stage --
UPDATE provider_batches
SET stage = $2,
    approved_at = CASE WHEN $2 = 'approved' THEN coalesce(approved_at, now()) ELSE approved_at END,
    finished_at = CASE WHEN $2 IN ('finished', 'rejected') THEN now() ELSE finished_at END
WHERE id = $1;

-- submit_items --
-- In the fenced transaction that writes stage `approving`, right before the approve request leaves: the
-- batch's items (provider_batches.item_ids) are linked to it with IntaSend's references and are SUBMITTED
-- (sent for payment; no longer cancellable) until their outcome is known. One write of each item, set-based.
-- Only PENDING items move (a second approve of the same batch finds them SUBMITTED). A batch initiated
-- before migration 0020 past `approving` has no arrays and is never written here.
UPDATE payroll_items i
SET provider_batch_id = b.id, request_reference_id = m.ref, status = 'SUBMITTED', updated_at = now()
FROM provider_batches b
CROSS JOIN LATERAL unnest(b.item_ids, b.request_reference_ids) AS m(id, ref)
WHERE b.id = $1 AND i.id = m.id AND i.status = 'PENDING';

-- record_poll --
-- Fenced like every write of a flow: only the holder of the row's lease ($4, $5) records a poll (clearing
-- callback_at, the mark a callback left to wake the row). The body ($2) is kept only when given: the flow
-- gives it when the batch's code changed (the final one is kept by record_final_status).
WITH fence AS (
    SELECT id FROM outbox
    WHERE id = $4 AND lease_token = $5 AND status = 'in_progress' AND locked_until > now()
    FOR SHARE
)
UPDATE provider_batches
SET status_polls = status_polls + 1, last_status = coalesce($2, last_status), status_code = $3,
    callback_at = NULL
WHERE id = $1 AND EXISTS (SELECT 1 FROM fence)
RETURNING id;

-- record_final_status --
-- The status answer that made the batch final, in the settling transaction (already fenced): counted as a
-- poll, kept whole once ($3, IntaSend's body as received) for audit, and the batch's stage ($2) set.
UPDATE provider_batches
SET status_polls = status_polls + 1, last_status = $3, status_code = $4, callback_at = NULL, stage = $2,
    finished_at = CASE WHEN $2 IN ('finished', 'rejected') THEN now() ELSE finished_at END
WHERE id = $1;

-- settle_items --
-- One set-based write for every item of a batch: their final (or provisional) states. $1: the outcomes as
-- one JSON array of objects (shared/batches.py ItemOutcome, encoded by msgspec): four asyncpg arrays of 500
-- elements cost the dispatcher about 0.5 ms more CPU per batch, and PostgreSQL no less (docs/performance.md).
UPDATE payroll_items i
SET status = s.status, failure_reason = s.reason, provider_reference = s.provider_reference, updated_at = now()
FROM json_to_recordset($1::json) AS s(item_id bigint, status text, reason text, provider_reference text)
WHERE i.id = s.item_id AND i.status NOT IN ('PAID', 'FAILED', 'NEEDS_REVIEW');

-- fail_unsettled --
-- Every item of these ids not yet in a final state gets $2 with reason $3 (dead rows, batch failures);
-- one that no batch was linked to yet (its batch never reached `approving`) is linked to batch $4, if any.
UPDATE payroll_items
SET status = $2, failure_reason = $3, updated_at = now(), provider_batch_id = coalesce(provider_batch_id, $4)
WHERE id = ANY($1::bigint[]) AND status NOT IN ('PAID', 'FAILED', 'NEEDS_REVIEW')
RETURNING id;

-- lock_payroll --
SELECT status FROM payrolls WHERE id = $1 FOR UPDATE;

-- payroll_open_rows --
-- The payroll's payout rows not finished yet (its event rows are written only once it is final).
SELECT count(*) FROM outbox WHERE payroll_id = $1 AND kind = 'send_batch' AND status NOT IN ('done', 'dead');

-- close_payroll --
-- THE rule for a payroll's final state, from its items' states. $2 is the state it closes from:
-- PROCESSING when the last open row of a payroll finished (finished_at is set then), NEEDS_REVIEW when an
-- operator resolved items (shared/resolutions.py; finished_at stays when payrun finished with it).
-- CANCELLED (migration 0014): the employer cancelled some items (shared/cancellation.py) and none needs review.
UPDATE payrolls p
SET status = CASE
        WHEN c.review > 0 THEN 'NEEDS_REVIEW'
        WHEN c.cancelled > 0 THEN 'CANCELLED'
        WHEN c.paid = c.total THEN 'COMPLETED'
        WHEN c.paid = 0 THEN 'FAILED'
        ELSE 'PARTIALLY_FAILED' END,
    finished_at = CASE WHEN p.status = 'PROCESSING' THEN now() ELSE p.finished_at END, updated_at = now()
FROM (
    SELECT count(*) AS total,
           count(*) FILTER (WHERE status = 'PAID') AS paid,
           count(*) FILTER (WHERE status = 'CANCELLED') AS cancelled,
           count(*) FILTER (WHERE status = 'NEEDS_REVIEW' OR status NOT IN ('PAID', 'FAILED', 'CANCELLED')) AS review
    FROM payroll_items WHERE payroll_id = $1
) c
WHERE p.id = $1 AND p.status = $2
RETURNING p.status, extract(epoch FROM p.finished_at - p.processing_started_at)::float8 AS duration_s;

-- touch_payroll --
UPDATE payrolls SET updated_at = now() WHERE id = $1;

-- log_attempt --
-- Fenced: only the holder of the row's lease ($7) records a step of its flow.
WITH fence AS (
    SELECT id FROM outbox
    WHERE id = $1 AND lease_token = $7 AND status = 'in_progress' AND locked_until > now()
    FOR SHARE
)
INSERT INTO outbox_attempts (outbox_id, attempt, dispatcher, action, outcome, detail)
SELECT $1, $2, $3, $4, $5, $6 FROM fence
RETURNING id;

-- note_callback --
-- A callback for a batch we know: keep it, and make the batch's outbox row due now so that a dispatcher
-- asks IntaSend for the status (the source of truth) instead of waiting for its next scheduled poll.
WITH kept AS (
    INSERT INTO provider_callbacks (tracking_id, status_code, body)
    VALUES ($1, $2, $3)
    ON CONFLICT (tracking_id, status_code)
    DO UPDATE SET deliveries = provider_callbacks.deliveries + 1
    RETURNING deliveries
), batch AS (
    UPDATE provider_batches SET callback_at = now()
    WHERE tracking_id = $1 AND stage IN ('approving', 'approved')
    RETURNING outbox_id
), due AS (
    UPDATE outbox SET available_at = least(available_at, now())
    WHERE id IN (SELECT outbox_id FROM batch) AND status = 'pending'
    RETURNING id
)
SELECT (SELECT deliveries FROM kept) AS deliveries,
       (SELECT count(*) FROM batch) AS known,
       (SELECT count(*) FROM due) AS woken;

-- approved_age --
-- Seconds since the batch was approved; NULL while it is not.
SELECT extract(epoch FROM now() - approved_at)::float8 FROM provider_batches WHERE id = $1;

-- lock_payrolls --
-- Every payroll a batch touches, locked in one order (by id) before its items are written: batches that
-- carry rows of the same payrolls then wait for each other instead of deadlocking.
SELECT id FROM payrolls WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE;

-- finish_carried --
-- The rows a lead row's batch carried end with it ($2: done or dead), in the same transaction.
UPDATE outbox
SET status = $2, processed_at = now(), last_error = coalesce($3, last_error)
WHERE carried_by = $1 AND status = 'in_progress'
RETURNING id;

-- gather_rows --
-- Right before a lead row ($1) initiates its batch, under its lease: take other due rows of the same
-- provider ($2), currency ($3) and wallet ($4, '' for the default) into the batch, in their turns across
-- employers (outbox_turns) as the claim takes them, as long as their items fit in $5 more. Rows that already
-- lead a batch or carry rows of their own are left alone. A gathered row is in_progress without a lease (carried_by = $1).
WITH locked AS (
    SELECT o.id, jsonb_array_length(o.payload -> 'item_ids') AS n, t.turn, t.available_at
    FROM outbox o
    JOIN outbox_turns t ON t.id = o.id
    WHERE o.status = 'pending' AND o.id <> $1 AND o.carried_by IS NULL
      AND o.kind = 'send_batch'
      AND o.payload ->> 'provider' = $2
      AND coalesce(o.payload ->> 'currency', 'KES') = $3
      AND coalesce(o.payload ->> 'wallet_id', '') = $4
      AND jsonb_array_length(o.payload -> 'item_ids') <= $5
      AND NOT EXISTS (SELECT 1 FROM outbox m WHERE m.carried_by = o.id)
      AND NOT EXISTS (SELECT 1 FROM provider_batches pb WHERE pb.outbox_id = o.id)
    ORDER BY t.turn, t.available_at, t.id
    LIMIT $5
    FOR UPDATE OF o SKIP LOCKED
), fitting AS (
    SELECT id FROM (
        SELECT id, sum(n) OVER (ORDER BY turn, available_at, id) AS running FROM locked
    ) r
    WHERE running <= $5
)
UPDATE outbox o
SET status = 'in_progress', carried_by = $1, attempts = o.attempts + 1
FROM fitting
WHERE o.id = fitting.id
RETURNING o.id, o.payroll_id, o.payload;

-- record_funds --
-- What a funds check before approve compared (migration 0014); counts the checks that found it short.
UPDATE provider_batches
SET funds_required = $2::numeric, funds_available = $3::numeric, funds_wallet_id = $4, funds_checked_at = now(),
    funds_short_checks = funds_short_checks + CASE WHEN $3::numeric < $2::numeric THEN 1 ELSE 0 END
WHERE id = $1
RETURNING funds_short_checks;

-- batch_cancelled_items --
-- Items of a batch cancelled by their employer: such a batch is never approved.
SELECT count(*)
FROM provider_batches b
JOIN payroll_items i ON i.id = ANY (b.item_ids)
WHERE b.id = $1 AND i.status = 'CANCELLED';

-- abandon_batch --
-- An initiated batch payrun will never approve: it moves no money at IntaSend; recorded as `abandoned`.
UPDATE provider_batches
SET stage = 'abandoned', finished_at = now(), abandon_reason = $2
WHERE id = $1 AND stage = 'initiated'
RETURNING tracking_id;

-- reform_rows --
-- A lead row ($1) and the rows its batch carries, each with its items still PENDING (position order): the
-- items that go out again in a new row when the batch is abandoned or the rows taken back before initiate.
SELECT o.id, o.payroll_id, o.kind, o.payload,
       coalesce((
           SELECT array_agg(i.id ORDER BY i.position)
           FROM payroll_items i
           WHERE i.id IN (SELECT e::bigint FROM jsonb_array_elements_text(o.payload -> 'item_ids') AS e)
             AND i.status = 'PENDING'
       ), '{}'::bigint[]) AS pending
FROM outbox o
WHERE (o.id = $1 OR o.carried_by = $1) AND o.kind = 'send_batch' AND o.status IN ('pending', 'in_progress')
ORDER BY o.id;

-- unlink_items --
-- PENDING items leave an abandoned batch: no batch carries them until a new one is initiated. Since
-- migration 0020 items are linked only at `approving`, so this finds none but those of older batches.
UPDATE payroll_items SET provider_batch_id = NULL, request_reference_id = NULL, updated_at = now()
WHERE id = ANY($1::bigint[]) AND status = 'PENDING' AND provider_batch_id IS NOT NULL;

-- finish_reformed --
-- The lead row and the rows it carried end `done` (their lease, if any, is gone: the fence stops its flow).
UPDATE outbox
SET status = 'done', locked_by = NULL, locked_until = NULL, lease_token = NULL, processed_at = now(),
    last_error = $2
WHERE (id = $1 OR carried_by = $1) AND status IN ('pending', 'in_progress')
RETURNING id;

-- insert_reformed --
-- A new row for the items of an old row ($2) still to be paid: same payroll, kind and wallet.
INSERT INTO outbox (payroll_id, kind, payload)
VALUES ($1, $3, $4::jsonb || jsonb_build_object('item_ids', to_jsonb($5::bigint[]), 'reformed_from', $2::bigint))
RETURNING id;

-- notify_outbox --
SELECT pg_notify('payrun_outbox', $1::text);
