-- insert_operator --
-- Only the SHA-256 of the operator key is stored; the key itself is shown once.
INSERT INTO operators (id, name, api_key_hash) VALUES ($1, $2, $3);

-- operator_by_key_hash --
SELECT id, name FROM operators WHERE api_key_hash = $1;

-- items_payrolls --
-- The payrolls of the items an operator resolves ($1), to lock them before the items (the order the
-- dispatcher locks in: payrolls by id, then their items).
SELECT DISTINCT payroll_id FROM payroll_items WHERE id = ANY($1::bigint[]);

-- lock_items --
-- The items to resolve, locked in id order, with the resolution already recorded for each (if any).
SELECT i.id, i.payroll_id, i.status,
       r.id AS resolution_id, r.to_status, r.provider_reference, r.reason
FROM payroll_items i
LEFT JOIN item_resolutions r ON r.item_id = i.id
WHERE i.id = ANY($1::bigint[])
ORDER BY i.id
FOR UPDATE OF i;

-- resolve_items --
-- Each item ($1) leaves NEEDS_REVIEW for its resolution ($2: PAID or FAILED, $3: the provider's reference
-- for PAID, $4: the reason for FAILED), and the resolution is recorded by operator $5 with note $6, in one
-- statement.
WITH resolved AS (
    UPDATE payroll_items i
    SET status = r.to_status,
        provider_reference = CASE WHEN r.to_status = 'PAID' THEN r.ref ELSE i.provider_reference END,
        failure_reason = CASE WHEN r.to_status = 'FAILED' THEN 'manual review: ' || r.reason
                              ELSE i.failure_reason END,
        updated_at = now()
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS r(id, to_status, ref, reason)
    WHERE i.id = r.id AND i.status = 'NEEDS_REVIEW'
    RETURNING i.id, i.payroll_id, r.to_status, r.ref, r.reason
)
INSERT INTO item_resolutions (item_id, payroll_id, operator_id, from_status, to_status, provider_reference,
                              reason, note)
SELECT id, payroll_id, $5, 'NEEDS_REVIEW', to_status, ref, reason, $6 FROM resolved
RETURNING id;

-- resolutions_of_items --
SELECT r.id, r.item_id, r.payroll_id, r.operator_id, o.name AS operator_name, r.from_status, r.to_status,
       r.provider_reference, r.reason, r.note, r.created_at
FROM item_resolutions r
JOIN operators o ON o.id = r.operator_id
WHERE r.item_id = ANY($1::bigint[])
ORDER BY r.item_id;

-- payroll_statuses --
SELECT id, status FROM payrolls WHERE id = ANY($1::uuid[]) ORDER BY id;

-- lock_payrolls --
-- The payrolls of the items being resolved, locked in one order (by id), as the dispatcher locks them.
SELECT id FROM payrolls WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE;
