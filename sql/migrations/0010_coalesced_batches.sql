-- One IntaSend batch carries the items of many outbox rows (many payrolls).
--
-- The row that was claimed (the lead) holds the lease, as every claimed row always has; right before its
-- batch is initiated it gathers other ready rows of the same provider, currency and wallet into its batch
-- (`carried_by` = the lead's id). A carried row is `in_progress` without a lease of its own: no claim ever
-- sees it (claims read pending rows and expired leases), and only the holder of its lead's lease writes it.
-- It is finished with its lead, in the same transaction. `provider_batches.outbox_id` stays the lead's id,
-- so each row's provider batch is the one of coalesce(carried_by, id), and every item names its own
-- (payroll_items.provider_batch_id); the view outbox_provider_batches says it for auditors.
ALTER TABLE outbox ADD COLUMN carried_by bigint REFERENCES outbox (id);
CREATE INDEX outbox_carried_by_idx ON outbox (carried_by) WHERE carried_by IS NOT NULL;

ALTER TABLE outbox DROP CONSTRAINT outbox_lease_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_lease_check CHECK (
    status <> 'in_progress'
    OR carried_by IS NOT NULL
    OR (locked_by IS NOT NULL AND locked_until IS NOT NULL AND lease_token IS NOT NULL)
);
ALTER TABLE outbox ADD CONSTRAINT outbox_no_lease_unless_in_progress_check CHECK (
    status = 'in_progress' OR (locked_by IS NULL AND locked_until IS NULL AND lease_token IS NULL)
);

CREATE VIEW outbox_provider_batches AS
SELECT o.id AS outbox_id, o.payroll_id, o.carried_by, b.id AS provider_batch_id, b.tracking_id, b.stage
FROM outbox o
JOIN provider_batches b ON b.outbox_id = coalesce(o.carried_by, o.id);

-- The order in which due pending rows take their turns, fair across employers: an employer's k-th due row
-- takes turn k after the rows it already has in flight (claimed, or carried by a claimed row's batch), so one
-- employer's 10,000-worker payroll does not hold back the 10-worker payrolls behind it. The claim
-- (sql/queries/outbox.sql) and the gathering of rows into a batch (sql/queries/batches.sql) both read it.
CREATE VIEW outbox_turns AS
WITH busy AS (
    SELECT p.employer_id, count(*) AS n
    FROM outbox o JOIN payrolls p ON p.id = o.payroll_id
    WHERE o.status = 'in_progress'
    GROUP BY p.employer_id
)
SELECT o.id, o.available_at,
       coalesce(b.n, 0) + row_number() OVER (PARTITION BY p.employer_id ORDER BY o.available_at, o.id) AS turn
FROM outbox o
JOIN payrolls p ON p.id = o.payroll_id
LEFT JOIN busy b ON b.employer_id = p.employer_id
WHERE o.status = 'pending' AND o.available_at <= now();
