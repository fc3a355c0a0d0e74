-- payrolls.retry_of: the payroll whose FAILED items this payroll pays again (POST /payrolls/{id}/retry makes
-- a new DRAFT of them). NULL for a payroll the employer posted. A payroll has at most one retry (the unique
-- constraint, which also indexes the chain both ways): retrying it twice would pay its FAILED items twice.
-- The retry's retry is made from the retry. Only a payroll in a final state is retried, so a DRAFT is never
-- referenced and deleting one (DELETE /payrolls/{id}) never meets this key. docs/audit.md follows an item's
-- attempts along the chain.

ALTER TABLE payrolls
    ADD COLUMN retry_of uuid NULL
        CONSTRAINT payrolls_retry_of_fkey REFERENCES payrolls (id),
    ADD CONSTRAINT payrolls_retry_of_key UNIQUE (retry_of),
    ADD CONSTRAINT payrolls_retry_of_check CHECK (retry_of <> id);
