-- payroll_state --
SELECT status FROM payrolls WHERE id = $1 AND employer_id = $2;

-- payroll_leads --
-- The lead rows of a payroll's live outbox rows: a row's own id, or the row whose batch carries it.
SELECT DISTINCT coalesce(carried_by, id) AS lead
FROM outbox
WHERE payroll_id = $1 AND kind = 'send_batch' AND status IN ('pending', 'in_progress');

-- lock_leads --
-- Lock lead rows in id order, the lock a flow's fenced writes take (hold_lease). `carried_by IS NULL` is
-- checked again on the locked version: a row gathered into another batch meanwhile is not a lead any more,
-- and no lock is held on it (its own lead is found and locked on the next round).
SELECT id FROM outbox
WHERE id = ANY($1::bigint[]) AND kind = 'send_batch' AND carried_by IS NULL
  AND status IN ('pending', 'in_progress')
ORDER BY id
FOR UPDATE;

-- lock_payroll --
SELECT status FROM payrolls WHERE id = $1 FOR UPDATE;

-- cancellable_items --
-- The payroll's PENDING items that no batch carries, or whose batch is still `initiated` (never `approving`):
-- cancelled now. Walks the (payroll_id, position) index; the caller holds every lead row's lock.
UPDATE payroll_items i
SET status = 'CANCELLED', failure_reason = $2, updated_at = now()
WHERE i.payroll_id = $1 AND i.status = 'PENDING'
  AND (i.provider_batch_id IS NULL
       OR EXISTS (SELECT 1 FROM provider_batches b WHERE b.id = i.provider_batch_id AND b.stage = 'initiated'))
RETURNING i.id;

-- reformable_leads --
-- The payroll's lead rows whose batch was never sent for approval (none yet, or `initiated`): they are
-- taken back (batches.reform) once their items of this payroll are cancelled.
SELECT DISTINCT coalesce(o.carried_by, o.id) AS lead
FROM outbox o
WHERE o.payroll_id = $1 AND o.kind = 'send_batch' AND o.status IN ('pending', 'in_progress')
  AND NOT EXISTS (
      SELECT 1 FROM provider_batches b
      WHERE b.outbox_id = coalesce(o.carried_by, o.id) AND b.stage <> 'initiated'
  )
ORDER BY 1;

-- mark_cancel_requested --
UPDATE payrolls SET cancel_requested_at = coalesce(cancel_requested_at, now()), updated_at = now()
WHERE id = $1;

-- initiated_batch_of_row --
SELECT id FROM provider_batches WHERE outbox_id = $1 AND stage = 'initiated';

-- cancel_counts --
-- After a cancel: the payroll's status, its CANCELLED items, and those it could not cancel that are still
-- on their way (in a batch being approved or approved, not yet final).
SELECT p.status, p.cancel_requested_at,
       count(i.id) FILTER (WHERE i.status = 'CANCELLED') AS cancelled,
       count(i.id) FILTER (WHERE i.status IN ('PENDING', 'SUBMITTED')) AS in_flight
FROM payrolls p
LEFT JOIN payroll_items i ON i.payroll_id = p.id
WHERE p.id = $1
GROUP BY p.id;

-- record_request --
-- Who asked (migration 0019): $2 is the operator acting for the employer, NULL for the employer itself.
INSERT INTO payroll_cancel_requests (payroll_id, operator_id, cancelled_now, not_cancellable, note)
VALUES ($1, $2, $3, $4, $5);
