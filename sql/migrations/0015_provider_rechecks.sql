-- The slow re-check of NEEDS_REVIEW items with IntaSend's status (dispatcher_service/recheck.py,
-- docs/operations.md section 4): one schedule row per provider batch that has items to re-check, and an
-- append-only record of every late answer that settled, confirmed or overrode an item.

-- When each batch is asked next. A dispatcher takes a row with a lease (locked_by, locked_until and a fresh
-- lease_token, as outbox rows); what it learns is written only while the token is still the row's.
-- Not audit data: a schedule (the evidence is in item_rechecks), so it goes with its batch.
CREATE TABLE batch_rechecks (
    batch_id        bigint PRIMARY KEY REFERENCES provider_batches (id) ON DELETE CASCADE,
    tracking_id     text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    due_at          timestamptz NOT NULL,
    checks          integer NOT NULL DEFAULT 0 CHECK (checks >= 0),
    last_checked_at timestamptz,
    -- What the last check learned: the batch's status code, 'not_found' (404), or the error.
    last_result     text,
    locked_by       text,
    locked_until    timestamptz,
    lease_token     uuid,
    -- Set when nothing is left to re-check (every item has the provider's final answer): no more checks.
    finished_at     timestamptz,
    -- Set when the horizon passed without a final answer: the items are left for a person.
    gave_up_at      timestamptz,
    CONSTRAINT batch_rechecks_lease_check
        CHECK ((lease_token IS NULL) = (locked_by IS NULL) AND (lease_token IS NULL) = (locked_until IS NULL))
);
-- The claim reads only the live schedule.
CREATE INDEX batch_rechecks_due_idx ON batch_rechecks (due_at) WHERE finished_at IS NULL AND gave_up_at IS NULL;

-- Finding the batches to re-check reads only the items in review.
CREATE INDEX payroll_items_review_batch_idx ON payroll_items (provider_batch_id) WHERE status = 'NEEDS_REVIEW';

-- One row per item whose final outcome a re-check learned from IntaSend, once per item: who (the dispatcher,
-- recorded_by 'provider re-check'), when, what IntaSend said (evidence: its transaction, or its batch's
-- status when the transaction is not listed) and what it did to the item. `resolution_id` names the
-- operator's resolution it met, if any: `agrees` says whether IntaSend's answer is the person's; when it is
-- not, the item follows IntaSend and this row is the record of the disagreement.
CREATE TABLE item_rechecks (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item_id            bigint NOT NULL REFERENCES payroll_items (id),
    payroll_id         uuid NOT NULL REFERENCES payrolls (id),
    tracking_id        text NOT NULL,
    recorded_by        text NOT NULL DEFAULT 'provider re-check' CHECK (recorded_by = 'provider re-check'),
    dispatcher         text NOT NULL,
    from_status        text NOT NULL CHECK (from_status IN ('NEEDS_REVIEW', 'PAID', 'FAILED')),
    to_status          text NOT NULL CHECK (to_status IN ('PAID', 'FAILED')),
    provider_reference text,
    reason             text,
    status_code        text,
    evidence           jsonb NOT NULL,
    -- item_resolutions.id of this item's resolution (no foreign key: item_resolutions stays truncate-proof
    -- with its own error, and both move together in the retention move).
    resolution_id      bigint,
    agrees             boolean,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT item_rechecks_item_key UNIQUE (item_id),
    CONSTRAINT item_rechecks_resolution_check CHECK ((resolution_id IS NULL) = (agrees IS NULL)),
    CONSTRAINT item_rechecks_evidence_check CHECK (
        (to_status = 'PAID' AND reason IS NULL) OR (to_status = 'FAILED' AND reason IS NOT NULL)
    )
);
CREATE INDEX item_rechecks_payroll_idx ON item_rechecks (payroll_id);

-- Append-only like item_resolutions (migration 0013): only the retention move may delete, after copying.
CREATE TRIGGER item_rechecks_append_only BEFORE UPDATE OR DELETE ON item_rechecks
    FOR EACH ROW EXECUTE FUNCTION payrun_append_only();
CREATE TRIGGER item_rechecks_no_truncate BEFORE TRUNCATE ON item_rechecks
    FOR EACH STATEMENT EXECUTE FUNCTION payrun_append_only();
