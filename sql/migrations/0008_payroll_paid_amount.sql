-- payrolls.paid_amount: the sum of the payroll's PAID items, kept by a statement trigger on payroll_items,
-- so GET /payrolls reads one column per payroll instead of summing up to 10,000 items for each of 200.
-- Whoever writes items (the dispatcher, an operator resolving NEEDS_REVIEW by hand) keeps it right without
-- knowing it exists. Only statements that change a PAID amount touch the payroll row, and those (settling a
-- batch) lock and update that row later in the same transaction anyway.

ALTER TABLE payrolls ADD COLUMN paid_amount numeric(14, 2) NOT NULL DEFAULT 0;

-- UPDATE (the dispatcher settles 500 items in one statement): one payroll update per statement and payroll.
CREATE FUNCTION payrun_paid_amount_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE payrolls p SET paid_amount = p.paid_amount + d.delta
    FROM (
        SELECT payroll_id, sum(amount) AS delta
        FROM (SELECT payroll_id, amount FROM new_items WHERE status = 'PAID'
              UNION ALL
              SELECT payroll_id, -amount FROM old_items WHERE status = 'PAID') changed
        GROUP BY payroll_id
    ) d
    WHERE p.id = d.payroll_id AND d.delta <> 0;
    RETURN NULL;
END $$;

-- INSERT and DELETE of a PAID item (by hand only: payrun inserts items PENDING and never deletes them): a
-- row trigger behind a WHEN, so the 10,000 PENDING items of a new payroll cost no transition table.
CREATE FUNCTION payrun_paid_amount_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE payrolls SET paid_amount = paid_amount + NEW.amount WHERE id = NEW.payroll_id;
    ELSE
        UPDATE payrolls SET paid_amount = paid_amount - OLD.amount WHERE id = OLD.payroll_id;
    END IF;
    RETURN NULL;
END $$;

-- Creating the triggers waits for every transaction writing payroll_items and holds off new ones until this
-- migration commits, so the sums below see every PAID item and none is counted twice or missed.
CREATE TRIGGER payroll_items_paid_amount_update AFTER UPDATE ON payroll_items
    REFERENCING OLD TABLE AS old_items NEW TABLE AS new_items
    FOR EACH STATEMENT EXECUTE FUNCTION payrun_paid_amount_update();
CREATE TRIGGER payroll_items_paid_amount_insert AFTER INSERT ON payroll_items
    FOR EACH ROW WHEN (NEW.status = 'PAID') EXECUTE FUNCTION payrun_paid_amount_row();
CREATE TRIGGER payroll_items_paid_amount_delete AFTER DELETE ON payroll_items
    FOR EACH ROW WHEN (OLD.status = 'PAID') EXECUTE FUNCTION payrun_paid_amount_row();

UPDATE payrolls p SET paid_amount = s.paid
FROM (SELECT payroll_id, sum(amount) AS paid FROM payroll_items WHERE status = 'PAID' GROUP BY payroll_id) s
WHERE p.id = s.payroll_id;
