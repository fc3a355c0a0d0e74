-- Funds checked before approve, and cancel of a processing payroll (docs/api.md, docs/operations.md).
--
-- provider_batches.funds_*: what the last funds check before approve compared, for the batch's wallet: the
-- batch's total estimate (charges included) and the wallet's available balance, when it was read, and how
-- many checks found it short (the back-off of the re-checks). A batch whose last check found it short and that
-- is still `initiated` is waiting for funds: it is never approved until a fresh read covers it.
ALTER TABLE provider_batches
    ADD COLUMN funds_required    numeric(16, 2),
    ADD COLUMN funds_available   numeric(16, 2),
    ADD COLUMN funds_wallet_id   text,
    ADD COLUMN funds_checked_at  timestamptz,
    ADD COLUMN funds_short_checks integer NOT NULL DEFAULT 0,
    -- Why an `abandoned` batch was never approved (a cancelled item was in it).
    ADD COLUMN abandon_reason    text;

-- `abandoned`: an initiated batch payrun will never approve (it carried an item cancelled before its
-- `approving` write). An unapproved IntaSend batch moves no money; its other items went into new outbox rows.
ALTER TABLE provider_batches DROP CONSTRAINT provider_batches_stage_check;
ALTER TABLE provider_batches ADD CONSTRAINT provider_batches_stage_check
    CHECK (stage IN ('initiated', 'approving', 'approved', 'finished', 'rejected', 'abandoned'));

-- CANCELLED: a final payroll state, for a payroll with at least one CANCELLED item and none NEEDS_REVIEW.
ALTER TABLE payrolls DROP CONSTRAINT payrolls_status_check;
ALTER TABLE payrolls ADD CONSTRAINT payrolls_status_check
    CHECK (status IN ('DRAFT', 'PROCESSING', 'COMPLETED', 'PARTIALLY_FAILED', 'FAILED', 'NEEDS_REVIEW',
                      'CANCELLED'));
-- When the employer first asked to cancel the payroll (POST /payrolls/{id}/cancel).
ALTER TABLE payrolls ADD COLUMN cancel_requested_at timestamptz;

-- The batches not approved yet (some waiting for funds), for the payroll views and the metrics.
CREATE INDEX provider_batches_unapproved_idx ON provider_batches (outbox_id) WHERE stage IN ('initiated', 'approving');
