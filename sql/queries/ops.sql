-- overview --
-- The console's head line, read-only, one round trip: payrolls per status, outbox rows per state (with the
-- two kinds of stuck row, see outbox_rows), NEEDS_REVIEW items. `done` rows are never deleted: their count is
-- the planner's estimate, as in metrics.sql. $1: how long a due pending row may wait before it counts as stuck.
SELECT
  (SELECT coalesce(jsonb_object_agg(s.status, s.n), '{}'::jsonb)
     FROM (SELECT status, count(*) AS n FROM payrolls GROUP BY status) s) AS payrolls,
  (SELECT count(*) FROM outbox WHERE status = 'pending') AS pending,
  (SELECT count(*) FROM outbox WHERE status = 'pending' AND available_at <= now()) AS due,
  (SELECT count(*) FROM outbox WHERE status = 'in_progress') AS in_progress,
  (SELECT count(*) FROM outbox WHERE status = 'dead') AS dead,
  (SELECT count(*) FROM outbox WHERE status = 'in_progress' AND carried_by IS NULL AND locked_until < now())
    + (SELECT count(*) FROM outbox
         WHERE status = 'pending' AND available_at < now() - make_interval(secs => $1)) AS stuck,
  (SELECT greatest(reltuples::bigint, 0) FROM pg_class WHERE oid = 'outbox'::regclass) AS total_estimate,
  (SELECT count(*) FROM payroll_items WHERE needs_review) AS review;

-- employers --
-- Every employer with its payrolls per status, for the console's employer filter; at most $1, by name.
SELECT e.id, e.name,
       coalesce(jsonb_object_agg(p.status, p.n) FILTER (WHERE p.status IS NOT NULL), '{}'::jsonb) AS payrolls
FROM employers e
LEFT JOIN (SELECT employer_id, status, count(*) AS n FROM payrolls GROUP BY employer_id, status) p
       ON p.employer_id = e.id
GROUP BY e.id, e.name
ORDER BY e.name, e.id
LIMIT $1;

-- rate --
-- The shared limiter's row (sql/queries/rate.sql): the next free send slot, and a 429 pause (paused_until in
-- the future) with the number of pauses so far (pause_epoch). The send log keeps only the last few seconds,
-- so the requests of the last $2 seconds give the rate in use now; `unanswered` are requests still in flight.
SELECT r.next_slot, r.paused_until, r.pause_epoch, clock_timestamp() AS now,
       (SELECT count(*) FROM provider_sends s
         WHERE s.name = r.name AND s.sent_at > clock_timestamp() - make_interval(secs => $2)) AS recent_sends,
       (SELECT count(*) FROM provider_sends s
         WHERE s.name = r.name AND s.answered_at IS NULL
           AND s.sent_at > clock_timestamp() - interval '10 minutes') AS unanswered
FROM provider_rate r
WHERE r.name = $1;

-- per_minute --
-- The last hour, minute by minute: items finished (by their IntaSend batch's finished_at, through
-- provider_batches_finished_idx, migration 0018; each item in the state it has now) and outbox rows waiting
-- (created by then and not finished by then: open rows through their partial indexes, rows finished within
-- the hour through their batch, carried rows through their lead's batch, dead rows through outbox_dead_idx).
WITH minutes AS (
    SELECT m AS minute
    FROM generate_series(date_trunc('minute', now()) - interval '59 minutes', date_trunc('minute', now()),
                         interval '1 minute') m
), finished AS (
    -- LATERAL: each batch's items through payroll_items_provider_batch_idx, never a scan of every item.
    SELECT date_trunc('minute', b.finished_at) AS minute,
           sum(c.paid) AS paid, sum(c.failed) AS failed, sum(c.review) AS review
    FROM provider_batches b
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE i.status = 'PAID') AS paid,
               count(*) FILTER (WHERE i.status = 'FAILED') AS failed,
               count(*) FILTER (WHERE i.status = 'NEEDS_REVIEW') AS review
        FROM payroll_items i
        WHERE i.provider_batch_id = b.id
    ) c
    WHERE b.finished_at >= date_trunc('minute', now()) - interval '59 minutes'
    GROUP BY 1
), rows_seen AS MATERIALIZED (  -- read once, not once per minute
    SELECT created_at, NULL::timestamptz AS ended FROM outbox WHERE status = 'pending'
    UNION ALL
    SELECT created_at, NULL FROM outbox WHERE status = 'in_progress'
    UNION ALL
    SELECT created_at, processed_at FROM outbox
    WHERE status = 'dead' AND processed_at >= now() - interval '1 hour'
    UNION ALL
    SELECT o.created_at, o.processed_at
    FROM provider_batches b
    JOIN outbox o ON o.id = b.outbox_id OR o.carried_by = b.outbox_id
    WHERE b.finished_at >= now() - interval '1 hour' AND o.status = 'done'
)
SELECT m.minute,
       coalesce(f.paid, 0)::bigint AS paid, coalesce(f.failed, 0)::bigint AS failed,
       coalesce(f.review, 0)::bigint AS review,
       (SELECT count(*) FROM rows_seen r
         WHERE r.created_at < m.minute + interval '1 minute'
           AND (r.ended IS NULL OR r.ended >= m.minute + interval '1 minute')) AS waiting
FROM minutes m
LEFT JOIN finished f ON f.minute = m.minute
ORDER BY m.minute;

-- payrolls --
-- All employers' payrolls, newest first, filtered by employer ($1), status ($2) and a reference pattern ($3,
-- an ILIKE pattern with its wildcards escaped), each with its employer, its outbox rows per state, its
-- NEEDS_REVIEW items (payroll_items_review_idx) and the payroll that retries it. Keyset pagination on
-- (created_at, id) as in payrolls.sql's list_payrolls; $6 is the page size plus one.
SELECT p.id, p.reference, p.currency, p.status, p.item_count, p.total_amount, p.paid_amount, p.created_at,
       p.updated_at, p.retry_of, p.employer_id, e.name AS employer_name,
       (SELECT r.id FROM payrolls r WHERE r.retry_of = p.id) AS retried_by,
       (SELECT count(*) FROM payroll_items i WHERE i.payroll_id = p.id AND i.needs_review) AS review_items,
       (SELECT coalesce(jsonb_object_agg(s.status, s.n), '{}'::jsonb)
          FROM (SELECT status, count(*) AS n FROM outbox o WHERE o.payroll_id = p.id GROUP BY status) s)
         AS outbox
FROM payrolls p
JOIN employers e ON e.id = p.employer_id
WHERE ($1::uuid IS NULL OR p.employer_id = $1::uuid)
  AND ($2::text IS NULL OR p.status = $2::text)
  AND ($3::text IS NULL OR p.reference ILIKE $3::text)
  AND ($4::timestamptz IS NULL OR (p.created_at, p.id) < ($4::timestamptz, $5::uuid))
ORDER BY p.created_at DESC, p.id DESC
LIMIT $6;

-- items --
-- Items of every employer, newest first (by id), filtered by status ($1), employer ($2) and a search: $4
-- matches the payee's name or the payroll's reference (ILIKE pattern), $5 the account (LIKE pattern of a
-- phone number's last nine digits, or of the text), $6 a request_reference_id or tracking_id exactly. Each
-- with IntaSend's references and the outbox row that carried it (attempts, last error, next attempt): what
-- IntaSend's support asks for. $3: the id of the last item of the previous page; $7: page size plus one.
-- With status NEEDS_REVIEW the items come from payroll_items_review_idx; a search over every state reads
-- the items table (an operator's occasional query, not a hot path).
SELECT i.id, i.payroll_id, p.reference AS payroll_reference, p.employer_id, e.name AS employer_name,
       i.position, i.name, i.account, i.amount, i.provider, i.status, i.failure_reason, i.provider_reference,
       i.request_reference_id, b.tracking_id, b.stage AS batch_stage, i.updated_at,
       o.id AS outbox_id, o.status AS outbox_status, o.attempts, o.last_error, o.available_at
FROM payroll_items i
JOIN payrolls p ON p.id = i.payroll_id
JOIN employers e ON e.id = p.employer_id
LEFT JOIN provider_batches b ON b.id = i.provider_batch_id
LEFT JOIN outbox o ON o.id = b.outbox_id
WHERE ($1::text IS NULL OR i.status = $1::text)
  AND ($1::text IS DISTINCT FROM 'NEEDS_REVIEW' OR i.needs_review)
  AND ($2::uuid IS NULL OR p.employer_id = $2::uuid)
  AND ($3::bigint IS NULL OR i.id < $3::bigint)
  AND ($4::text IS NULL
       OR i.name ILIKE $4::text OR p.reference ILIKE $4::text OR i.account LIKE $5::text
       OR i.request_reference_id = $6::text OR b.tracking_id = $6::text)
ORDER BY i.id DESC
LIMIT $7;

-- outbox_rows --
-- Outbox rows of every employer in the states $1 (oldest first, by id), only the stuck ones when $2: an
-- in_progress row whose lease ran out (its dispatcher died or froze; another claims it when it is due) or a
-- pending row due more than $3 seconds ago that no dispatcher has claimed. Each with its payroll, employer,
-- items, last error, attempts, next attempt and IntaSend batch (a carried row's is its lead's). $4: employer;
-- $5: the id of the last row of the previous page; $6: page size plus one.
SELECT o.id, o.payroll_id, p.reference AS payroll_reference, p.employer_id, e.name AS employer_name,
       o.status, o.attempts, o.errors, o.last_error, o.created_at, o.available_at, o.locked_by,
       o.locked_until, o.processed_at, o.carried_by, b.tracking_id, b.stage AS batch_stage,
       (o.status = 'in_progress' AND o.carried_by IS NULL AND o.locked_until < now())
         OR (o.status = 'pending' AND o.available_at < now() - make_interval(secs => $3)) AS stuck
FROM outbox o
JOIN payrolls p ON p.id = o.payroll_id
JOIN employers e ON e.id = p.employer_id
LEFT JOIN provider_batches b ON b.outbox_id = coalesce(o.carried_by, o.id)
WHERE o.status = ANY($1::text[])
  AND (NOT $2::boolean
       OR (o.status = 'in_progress' AND o.carried_by IS NULL AND o.locked_until < now())
       OR (o.status = 'pending' AND o.available_at < now() - make_interval(secs => $3)))
  AND ($4::uuid IS NULL OR p.employer_id = $4::uuid)
  AND ($5::bigint IS NULL OR o.id > $5::bigint)
ORDER BY o.id
LIMIT $6;

-- actions --
-- The console's action log, newest first, at most $1: operators' resolutions (item_resolutions, append-only),
-- retries (payrolls.retry_of: the new payroll names the one whose FAILED items it pays again) and cancel
-- requests (payroll_cancel_requests, append-only: an operator's on the employer's behalf, or the employer's).
(SELECT 'resolution' AS kind, r.created_at, r.payroll_id, p.reference AS payroll_reference,
        e.name AS employer_name, r.item_id, op.name AS operator_name, r.to_status AS status,
        r.provider_reference, r.reason, r.note, NULL::uuid AS retry_id, NULL::text AS retry_reference,
        NULL::integer AS cancelled_now, NULL::integer AS not_cancellable
   FROM item_resolutions r
   JOIN operators op ON op.id = r.operator_id
   JOIN payrolls p ON p.id = r.payroll_id
   JOIN employers e ON e.id = p.employer_id
  ORDER BY r.created_at DESC, r.id DESC
  LIMIT $1)
UNION ALL
(SELECT 'retry', n.created_at, n.retry_of, old.reference, e.name, NULL, NULL, n.status, NULL, NULL, NULL,
        n.id, n.reference, NULL, NULL
   FROM payrolls n
   JOIN payrolls old ON old.id = n.retry_of
   JOIN employers e ON e.id = n.employer_id
  WHERE n.retry_of IS NOT NULL
  ORDER BY n.created_at DESC
  LIMIT $1)
UNION ALL
(SELECT 'cancel', c.created_at, c.payroll_id, p.reference, e.name, NULL, op.name, p.status, NULL, NULL,
        c.note, NULL, NULL, c.cancelled_now, c.not_cancellable
   FROM payroll_cancel_requests c
   JOIN payrolls p ON p.id = c.payroll_id
   JOIN employers e ON e.id = p.employer_id
   LEFT JOIN operators op ON op.id = c.operator_id
  ORDER BY c.created_at DESC, c.id DESC
  LIMIT $1)
ORDER BY created_at DESC
LIMIT $1;

-- employer_of_payroll --
-- The employer a payroll belongs to: an operator acts for that employer, on that employer's payroll only.
SELECT employer_id FROM payrolls WHERE id = $1;
