-- payroll_funds_wait --
-- The batches carrying a payroll's live rows that wait for funds: not approved (`initiated`, or `approving`
-- found still waiting for approval after a crash), and their last funds check found the wallet short. One row per wallet (a payroll's rows all name one wallet).
-- next_check_at: when the first of them is checked again (its lead row's available_at).
WITH waiting AS (
    SELECT DISTINCT b.id, b.funds_wallet_id, b.funds_required, b.funds_available, b.funds_checked_at,
           lead.available_at
    FROM outbox r
    JOIN provider_batches b ON b.outbox_id = coalesce(r.carried_by, r.id)
    JOIN outbox lead ON lead.id = b.outbox_id
    WHERE r.payroll_id = $1 AND r.kind = 'send_batch' AND r.status IN ('pending', 'in_progress')
      AND b.stage IN ('initiated', 'approving') AND b.funds_checked_at IS NOT NULL
      AND b.funds_available < b.funds_required
)
SELECT funds_wallet_id AS wallet_id,
       count(*) AS batches,
       sum(funds_required) AS required,
       (array_agg(funds_available ORDER BY funds_checked_at DESC))[1] AS available,
       max(funds_checked_at) AS checked_at,
       min(available_at) AS next_check_at
FROM waiting
GROUP BY funds_wallet_id
ORDER BY funds_wallet_id
LIMIT 1;

-- batches_waiting_for_funds --
-- For /metrics: batches waiting for funds, and the sum of their shortfalls.
SELECT count(*) AS batches, coalesce(sum(funds_required - funds_available), 0)::float8 AS short_by
FROM provider_batches
WHERE stage IN ('initiated', 'approving') AND funds_checked_at IS NOT NULL AND funds_available < funds_required;
