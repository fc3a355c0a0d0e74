-- Operators settle NEEDS_REVIEW items through the API (POST /ops/items/resolve) with keys of their own, and
-- every settlement is kept, append-only, in item_resolutions (docs/operations.md section 4, docs/audit.md).

CREATE TABLE operators (
    id           uuid PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- sha256 of the operator key (prefix pr_op_), like employers.api_key_hash: an employer's key is never
    -- looked up here, nor an operator's key in employers.
    api_key_hash bytea NOT NULL UNIQUE CHECK (length(api_key_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE item_resolutions (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item_id            bigint NOT NULL REFERENCES payroll_items (id),
    payroll_id         uuid NOT NULL REFERENCES payrolls (id),
    operator_id        uuid NOT NULL REFERENCES operators (id),
    from_status        text NOT NULL CHECK (from_status = 'NEEDS_REVIEW'),
    to_status          text NOT NULL CHECK (to_status IN ('PAID', 'FAILED')),
    provider_reference text CHECK (length(provider_reference) BETWEEN 1 AND 200),
    reason             text CHECK (length(reason) BETWEEN 1 AND 2000),
    note               text CHECK (length(note) <= 2000),
    created_at         timestamptz NOT NULL DEFAULT now(),
    -- An item leaves NEEDS_REVIEW once: one resolution per item.
    CONSTRAINT item_resolutions_item_key UNIQUE (item_id),
    CONSTRAINT item_resolutions_evidence_check CHECK (
        (to_status = 'PAID' AND provider_reference IS NOT NULL AND reason IS NULL)
        OR (to_status = 'FAILED' AND reason IS NOT NULL AND provider_reference IS NULL)
    )
);
CREATE INDEX item_resolutions_payroll_idx ON item_resolutions (payroll_id);
CREATE INDEX item_resolutions_operator_idx ON item_resolutions (operator_id, created_at);

-- Append-only, whoever connects (the table's owner too, which REVOKE would not stop): UPDATE and TRUNCATE are
-- always refused, DELETE too except inside the retention move of docs/operations.md section 5, which copies
-- the rows to archive.item_resolutions first and says so with `SET LOCAL payrun.archiving = 'on'`.
CREATE FUNCTION payrun_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('payrun.archiving', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER item_resolutions_append_only BEFORE UPDATE OR DELETE ON item_resolutions
    FOR EACH ROW EXECUTE FUNCTION payrun_append_only();
CREATE TRIGGER item_resolutions_no_truncate BEFORE TRUNCATE ON item_resolutions
    FOR EACH STATEMENT EXECUTE FUNCTION payrun_append_only();
