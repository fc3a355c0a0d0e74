-- insert_payroll --
-- A new DRAFT payroll. Its item_count and total_amount were computed from the validated items; the unique
-- constraint payrolls_employer_reference_key turns a second payroll with the same reference into a 409.
-- $7: the payroll whose FAILED items this one pays again (POST /payrolls/{id}/retry), NULL otherwise.
INSERT INTO payrolls (id, employer_id, reference, currency, item_count, total_amount, retry_of)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id, reference, currency, status, item_count, total_amount, paid_amount, created_at, updated_at,
          retry_of;

-- insert_items --
-- Every item of a new payroll in one statement (10,000 items, one round trip): parallel arrays, unnested
-- with their ordinality, which becomes the item's position (from 0, the order the employer sent them in).
INSERT INTO payroll_items (payroll_id, position, name, account, amount, provider, bank_code, narrative)
SELECT $1, item.ord - 1, item.name, item.account, item.amount, item.provider, item.bank_code, item.narrative
FROM unnest($2::text[], $3::text[], $4::numeric[], $5::text[], $6::text[], $7::text[])
     WITH ORDINALITY AS item (name, account, amount, provider, bank_code, narrative, ord)
RETURNING id, position, name, account, amount, provider, status, failure_reason, provider_reference;

-- id_by_reference --
-- The payroll that already holds a reference, named in the 409 a duplicate gets.
SELECT id FROM payrolls WHERE employer_id = $1 AND reference = $2;

-- get_payroll --
-- One payroll of one employer (another employer's payroll is not found, exactly like a missing one).
-- paid_amount is the sum of its PAID items, kept by a trigger on payroll_items (migration 0008).
SELECT id, reference, currency, status, item_count, total_amount, paid_amount, created_at, updated_at,
       retry_of
FROM payrolls
WHERE id = $1 AND employer_id = $2;

-- get_items --
-- A payroll's items in the order the employer sent them (the (payroll_id, position) unique index).
SELECT id, position, name, account, amount, provider, status, failure_reason, provider_reference
FROM payroll_items
WHERE payroll_id = $1
ORDER BY position;

-- list_payrolls --
-- One page of an employer's payrolls, newest first, optionally of one status. Keyset pagination on
-- (created_at, id) walks payrolls_employer_created_idx; $3/$4 are the last row of the previous page (NULL
-- on the first). $5 is the page size plus one, so the caller can tell whether another page follows.
-- No item is read: paid_amount is the column a trigger keeps (migration 0008), so a page of 200 payrolls of
-- 10,000 items each costs 201 index entries and rows, not 2,000,000 item rows.
SELECT id, reference, currency, status, item_count, total_amount, paid_amount, created_at, updated_at,
       retry_of
FROM payrolls
WHERE employer_id = $1
  AND ($2::text IS NULL OR status = $2::text)
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3::timestamptz, $4::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $5;

-- payroll_state --
-- Why outbox.start_payroll started nothing: no such payroll (for this employer), already PROCESSING, or final.
SELECT status FROM payrolls WHERE id = $1 AND employer_id = $2;

-- status_summary --
-- The polling endpoint in one query: the payroll and its item counts per status (GROUP BY over the
-- (payroll_id, position) index), with the sum of PAID items.
SELECT p.id, p.status, p.item_count, p.total_amount, p.updated_at,
       coalesce(c.counts, '{}'::jsonb) AS counts,
       coalesce(c.paid_amount, 0) AS paid_amount
FROM payrolls p
LEFT JOIN LATERAL (
    SELECT jsonb_object_agg(per_status.status, per_status.n) AS counts, sum(per_status.paid) AS paid_amount
    FROM (
        SELECT status, count(*) AS n, sum(amount) FILTER (WHERE status = 'PAID') AS paid
        FROM payroll_items
        WHERE payroll_id = p.id
        GROUP BY status
    ) per_status
) c ON true
WHERE p.id = $1 AND p.employer_id = $2;

-- lock_payroll --
-- One payroll of one employer, its row locked FOR UPDATE until the caller's transaction ends: deleting a
-- DRAFT or retrying a final payroll decides on the status it reads here. start_payroll's UPDATE takes the
-- same lock, so a concurrent process and delete are serialized: whichever commits first wins, and the
-- other reads the outcome (PROCESSING: not deleted; gone: not processed).
SELECT status, reference, currency FROM payrolls WHERE id = $1 AND employer_id = $2 FOR UPDATE;

-- delete_items --
-- A DRAFT payroll's items (locked by lock_payroll in the same transaction: no outbox row, no batch).
DELETE FROM payroll_items WHERE payroll_id = $1;

-- delete_payroll --
-- The DRAFT payroll itself, after its items; its reference is free again.
DELETE FROM payrolls WHERE id = $1;

-- retry_of_payroll --
-- The payroll that already retries $1 (the unique payrolls_retry_of_key: at most one), if any.
SELECT id FROM payrolls WHERE retry_of = $1;

-- failed_items --
-- What a retry pays again: the FAILED items only (never NEEDS_REVIEW: the provider may have paid them; never
-- PAID or CANCELLED), in their order, with everything a new item needs.
SELECT name, account, amount, provider, bank_code, narrative
FROM payroll_items
WHERE payroll_id = $1 AND status = 'FAILED'
ORDER BY position;

-- items_page --
-- One page of a payroll's items in position order, optionally of one status, each with the tracking_id of
-- the IntaSend batch that carries it (GET /payrolls/{id}/items and its CSV export). One statement per page:
-- the payroll row (scoped to the employer: another employer's payroll is no row at all, exactly like a
-- missing one), then, laterally, its items after position $4 (-1 on the first page) walking the
-- (payroll_id, position) unique index, payroll_items_payroll_position_key. $5 is the page size plus one, so
-- the caller can tell whether another page follows. A payroll with no item on this page still gives one row,
-- its item columns NULL, so "no such payroll" and "no more items" are told apart without a second query.
SELECT p.reference, i.id, i.position, i.name, i.account, i.amount, i.provider, i.status, i.failure_reason,
       i.provider_reference, i.request_reference_id, i.tracking_id, i.updated_at
FROM payrolls p
LEFT JOIN LATERAL (
    SELECT it.id, it.position, it.name, it.account, it.amount, it.provider, it.status, it.failure_reason,
           it.provider_reference, it.request_reference_id, b.tracking_id, it.updated_at
    FROM payroll_items it
    LEFT JOIN provider_batches b ON b.id = it.provider_batch_id
    WHERE it.payroll_id = p.id
      AND ($3::text IS NULL OR it.status = $3::text)
      AND it.position > $4::integer
    ORDER BY it.position
    LIMIT $5
) i ON true
WHERE p.id = $1 AND p.employer_id = $2
ORDER BY i.position;
