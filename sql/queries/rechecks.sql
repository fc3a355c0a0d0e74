-- discover --
-- Give every provider batch with something to re-check a schedule, first asked $1 seconds from now: items
-- in NEEDS_REVIEW, or resolved by an operator without IntaSend's final answer yet. Only batches whose outbox
-- row is over (done, or dead after an approve may have gone through): a live row still follows its batch.
INSERT INTO batch_rechecks (batch_id, tracking_id, due_at)
SELECT b.id, b.tracking_id, now() + make_interval(secs => $1)
FROM provider_batches b
JOIN outbox o ON o.id = b.outbox_id AND o.status IN ('done', 'dead')
WHERE b.id IN (
        SELECT provider_batch_id FROM payroll_items
        WHERE needs_review AND provider_batch_id IS NOT NULL
        UNION
        SELECT i.provider_batch_id FROM item_resolutions r
        JOIN payroll_items i ON i.id = r.item_id
        WHERE i.provider_batch_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM item_rechecks c WHERE c.item_id = r.item_id)
    )
  AND NOT EXISTS (SELECT 1 FROM batch_rechecks r WHERE r.batch_id = b.id)
ON CONFLICT (batch_id) DO NOTHING
RETURNING batch_id;

-- claim --
-- Take up to $3 due schedules whose lease (if any) ran out, for $2 seconds, with a fresh lease_token (the
-- fence: the previous holder can no longer write). SKIP LOCKED: two dispatchers never take the same batch.
WITH due AS (
    SELECT batch_id FROM batch_rechecks
    WHERE finished_at IS NULL AND gave_up_at IS NULL AND due_at <= now()
      AND (locked_until IS NULL OR locked_until < now())
    ORDER BY due_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE batch_rechecks r
SET locked_by = $1, locked_until = now() + make_interval(secs => $2), lease_token = gen_random_uuid()
FROM due
WHERE r.batch_id = due.batch_id
RETURNING r.batch_id, r.tracking_id, r.lease_token, r.checks,
          extract(epoch FROM now() - r.created_at)::float8 AS age_s;

-- next_due --
-- Seconds until the next schedule is due (negative: overdue), NULL when none is live.
SELECT extract(epoch FROM min(greatest(due_at, coalesce(locked_until, due_at))) - now())::float8
FROM batch_rechecks
WHERE finished_at IS NULL AND gave_up_at IS NULL;

-- items_to_recheck --
-- The batch's items still waiting for IntaSend's final answer: NEEDS_REVIEW, or resolved by an operator,
-- and not yet settled, confirmed or overridden by a re-check.
SELECT i.id, i.position, i.name, i.account, i.amount, i.provider, i.bank_code, i.narrative, i.status,
       i.request_reference_id
FROM payroll_items i
WHERE i.provider_batch_id = $1 AND i.request_reference_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM item_rechecks c WHERE c.item_id = i.id)
  AND (i.status = 'NEEDS_REVIEW' OR EXISTS (SELECT 1 FROM item_resolutions r WHERE r.item_id = i.id))
ORDER BY i.position;

-- hold --
-- The fence: the schedule is still ours ($2, before its lease ran out), locked until the transaction ends.
SELECT batch_id FROM batch_rechecks
WHERE batch_id = $1 AND lease_token = $2 AND locked_until > now()
FOR UPDATE;

-- lock_payrolls --
-- The payrolls of the items to write, locked in one order (by id) before the items, as everyone else does.
SELECT id, status FROM payrolls
WHERE id IN (SELECT payroll_id FROM payroll_items WHERE id = ANY($1::bigint[]))
ORDER BY id
FOR UPDATE;

-- lock_items --
-- The items to write, locked in id order, with the operator's resolution (if any) and whether a re-check
-- already recorded IntaSend's answer for them.
SELECT i.id, i.payroll_id, i.status, i.provider_reference,
       r.id AS resolution_id, r.to_status AS resolved_to,
       EXISTS (SELECT 1 FROM item_rechecks c WHERE c.item_id = i.id) AS rechecked
FROM payroll_items i
LEFT JOIN item_resolutions r ON r.item_id = i.id
WHERE i.id = ANY($1::bigint[])
ORDER BY i.id
FOR UPDATE OF i;

-- follow_provider --
-- Items whose state IntaSend's final answer changes ($2 PAID or FAILED, $3 its reference, $4 its reason).
UPDATE payroll_items i
SET status = s.status,
    provider_reference = CASE WHEN s.status = 'PAID' THEN s.ref END,
    failure_reason = CASE WHEN s.status = 'FAILED' THEN 'provider re-check: ' || s.reason END,
    updated_at = now()
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS s(id, status, ref, reason)
WHERE i.id = s.id AND i.status <> s.status
RETURNING i.id;

-- record --
-- What IntaSend said about each item, append-only, once per item (item_rechecks_item_key).
INSERT INTO item_rechecks (item_id, payroll_id, tracking_id, dispatcher, from_status, to_status,
                           provider_reference, reason, status_code, evidence, resolution_id, agrees)
SELECT r.item_id, r.payroll_id, $1, $2, r.from_status, r.to_status, r.ref, r.reason, r.code, r.evidence,
       r.resolution_id, r.agrees
FROM unnest($3::bigint[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
            $10::jsonb[], $11::bigint[], $12::bool[])
     AS r(item_id, payroll_id, from_status, to_status, ref, reason, code, evidence, resolution_id, agrees)
RETURNING id;

-- checked --
-- The check is over (fenced by the caller's `hold`, or here by the token): count it, say what it learned,
-- give the lease back and schedule the next one ($4 seconds from now), or end the schedule: $5 'finished'
-- (nothing left to re-check), 'gave_up' (past the horizon), NULL (go on).
UPDATE batch_rechecks
SET checks = checks + 1, last_checked_at = now(), last_result = $3,
    due_at = now() + make_interval(secs => $4),
    finished_at = CASE WHEN $5 = 'finished' THEN now() END,
    gave_up_at = CASE WHEN $5 = 'gave_up' THEN now() END,
    locked_by = NULL, locked_until = NULL, lease_token = NULL
WHERE batch_id = $1 AND lease_token = $2 AND locked_until > now()
RETURNING batch_id;

-- targets --
-- For POST /ops/items/recheck: the items asked ($1) or every item of a payroll ($2), and whether each has
-- something to re-check (a batch over, IntaSend's answer not yet recorded, NEEDS_REVIEW or resolved by hand).
SELECT i.id, i.payroll_id, i.status, b.id AS batch_id, b.tracking_id,
       (b.id IS NOT NULL AND i.request_reference_id IS NOT NULL AND o.status IN ('done', 'dead')
        AND NOT EXISTS (SELECT 1 FROM item_rechecks c WHERE c.item_id = i.id)
        AND (i.status = 'NEEDS_REVIEW' OR EXISTS (SELECT 1 FROM item_resolutions r WHERE r.item_id = i.id)))
       AS recheckable
FROM payroll_items i
LEFT JOIN provider_batches b ON b.id = i.provider_batch_id
LEFT JOIN outbox o ON o.id = b.outbox_id
WHERE i.id = ANY($1::bigint[]) OR i.payroll_id = $2
ORDER BY i.id;

-- due_now --
-- Make these batches' schedules due now (a new schedule, or one that ended by the horizon starts again);
-- a schedule due already stays as it is, so asking twice asks IntaSend once.
INSERT INTO batch_rechecks (batch_id, tracking_id, due_at)
SELECT b.id, b.tracking_id, now() FROM provider_batches b WHERE b.id = ANY($1::bigint[])
ON CONFLICT (batch_id) DO UPDATE
SET due_at = least(batch_rechecks.due_at, now()), gave_up_at = NULL, finished_at = NULL
RETURNING batch_id, tracking_id, due_at, checks, last_checked_at, last_result;

-- payroll_exists --
SELECT EXISTS (SELECT 1 FROM payrolls WHERE id = $1);
