-- Who asked to cancel a payroll (POST /payrolls/{id}/cancel, the employer's key; POST /ops/payrolls/{id}/cancel,
-- an operator's key on the employer's behalf): one row per request that was answered 200, written in the
-- transaction that cancelled the items, append-only like item_resolutions (docs/audit.md, "Cancel requests").
CREATE TABLE payroll_cancel_requests (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payroll_id      uuid NOT NULL REFERENCES payrolls (id),
    -- NULL: the payroll's employer asked with its own key.
    operator_id     uuid REFERENCES operators (id),
    cancelled_now   integer NOT NULL CHECK (cancelled_now >= 0),
    not_cancellable integer NOT NULL CHECK (not_cancellable >= 0),
    -- The operator's note (a ticket number, the employer's call); the employer route sends none.
    note            text CHECK (length(note) BETWEEN 1 AND 2000),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payroll_cancel_requests_payroll_idx ON payroll_cancel_requests (payroll_id);
CREATE INDEX payroll_cancel_requests_created_idx ON payroll_cancel_requests (created_at);

CREATE TRIGGER payroll_cancel_requests_append_only BEFORE UPDATE OR DELETE ON payroll_cancel_requests
    FOR EACH ROW EXECUTE FUNCTION payrun_append_only();
CREATE TRIGGER payroll_cancel_requests_no_truncate BEFORE TRUNCATE ON payroll_cancel_requests
    FOR EACH STATEMENT EXECUTE FUNCTION payrun_append_only();
