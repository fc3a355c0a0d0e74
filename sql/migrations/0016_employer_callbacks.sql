-- Employers told when a payroll is done: an optional callback URL per employer, and one `deliver_event` outbox
-- row per final state a payroll reaches, written in the transaction that gives the payroll that state
-- (docs/api.md section 11). A dispatcher POSTs the event, signed with the employer's secret, retrying with
-- back-off; every attempt is in outbox_attempts.

-- The secret signs the events (HMAC-SHA256), so payrun must read it back: it is stored as given, unlike API
-- keys. Only `payrun employer set-callback` writes it (and prints it once) and only the dispatcher reads it;
-- the API never returns it. Give audit roles no SELECT on this column (docs/audit.md).
CREATE TABLE employer_callbacks (
    employer_id uuid PRIMARY KEY REFERENCES employers (id),
    url         text NOT NULL CHECK (url ~ '^https?://[^/?#[:space:]]+' AND length(url) <= 2000),
    secret      text NOT NULL CHECK (length(secret) BETWEEN 32 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE outbox DROP CONSTRAINT outbox_kind_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_kind_check CHECK (kind IN ('send_batch', 'deliver_event'));

-- One event per payroll and final status (a NEEDS_REVIEW payroll may later reach another final state when
-- operators resolve its items: a second event): emitting twice writes nothing.
CREATE UNIQUE INDEX outbox_payroll_event_key ON outbox (payroll_id, (payload ->> 'status'))
    WHERE kind = 'deliver_event';
-- The claim's event branch reads only due event rows, however many payout rows wait.
CREATE INDEX outbox_event_pending_idx ON outbox (available_at, id) WHERE status = 'pending' AND kind = 'deliver_event';

-- outbox_turns (migration 0010) orders payout rows only: event rows neither take turns nor make their
-- employer look busy. Same columns, same order for send_batch rows.
CREATE OR REPLACE VIEW outbox_turns AS
WITH busy AS (
    SELECT p.employer_id, count(*) AS n
    FROM outbox o JOIN payrolls p ON p.id = o.payroll_id
    WHERE o.status = 'in_progress' AND o.kind = 'send_batch'
    GROUP BY p.employer_id
)
SELECT o.id, o.available_at,
       coalesce(b.n, 0) + row_number() OVER (PARTITION BY p.employer_id ORDER BY o.available_at, o.id) AS turn
FROM outbox o
JOIN payrolls p ON p.id = o.payroll_id
LEFT JOIN busy b ON b.employer_id = p.employer_id
WHERE o.status = 'pending' AND o.available_at <= now() AND o.kind = 'send_batch';

-- THE call every path that makes a payroll final makes, in that same transaction, after the payroll's new
-- status is written: `SELECT payrun_payroll_event(id)`. It queues the event of the payroll's current status
-- when that status is final and its employer has a callback URL, once per (payroll, status), and wakes the
-- dispatchers at commit. Returns the outbox row's id, or NULL when nothing was queued. The body is fixed here,
-- so every delivery attempt sends the same event.
CREATE FUNCTION payrun_payroll_event(p_payroll uuid) RETURNS bigint LANGUAGE sql AS $$
    WITH queued AS (
        INSERT INTO outbox (payroll_id, kind, payload)
        SELECT p.id, 'deliver_event', jsonb_build_object(
            'event_id', gen_random_uuid(),
            'type', 'payroll.' || lower(p.status),
            'payroll_id', p.id,
            'reference', p.reference,
            'status', p.status,
            'item_count', p.item_count,
            'counts', (
                SELECT jsonb_build_object(
                    'PENDING', count(*) FILTER (WHERE i.status = 'PENDING'),
                    'SUBMITTED', count(*) FILTER (WHERE i.status = 'SUBMITTED'),
                    'PAID', count(*) FILTER (WHERE i.status = 'PAID'),
                    'FAILED', count(*) FILTER (WHERE i.status = 'FAILED'),
                    'NEEDS_REVIEW', count(*) FILTER (WHERE i.status = 'NEEDS_REVIEW'),
                    'CANCELLED', count(*) FILTER (WHERE i.status = 'CANCELLED'))
                FROM payroll_items i WHERE i.payroll_id = p.id),
            'total_amount', p.total_amount::text,
            'paid_amount', p.paid_amount::text,
            'currency', p.currency,
            'occurred_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'))
        FROM payrolls p
        JOIN employer_callbacks c ON c.employer_id = p.employer_id
        WHERE p.id = p_payroll AND p.status NOT IN ('DRAFT', 'PROCESSING')
        ON CONFLICT (payroll_id, (payload ->> 'status')) WHERE kind = 'deliver_event' DO NOTHING
        RETURNING id
    )
    SELECT q.id FROM queued q CROSS JOIN LATERAL (SELECT pg_notify('payrun_outbox', p_payroll::text)) woken;
$$;
