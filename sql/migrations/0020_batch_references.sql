-- A batch's items and their IntaSend references are kept on the batch row when it is initiated (one row
-- written), not on its 500 item rows: the items are linked to the batch (provider_batch_id,
-- request_reference_id) and made SUBMITTED in ONE write, in the fenced transaction that moves the batch to
-- `approving`, right before the approve request leaves. Before, a batch cost three writes of every item
-- (references at initiate, SUBMITTED after approve, outcome); now two (docs/performance.md).
-- item_ids: the items sent in the initiate, in payroll order; request_reference_ids: IntaSend's reference of
-- each, in the same order. NULL for batches initiated before this migration whose stage is past
-- `approving` (their items were linked at initiate).
ALTER TABLE provider_batches
    ADD COLUMN item_ids bigint[],
    ADD COLUMN request_reference_ids text[],
    ADD CONSTRAINT provider_batches_references_match
        CHECK (cardinality(item_ids) IS NOT DISTINCT FROM cardinality(request_reference_ids));

-- Batches not yet past `approving` when this runs were linked item by item at initiate: their arrays are
-- taken from the items, so that whoever approves them next reads them from the batch like any other.
UPDATE provider_batches b
SET item_ids = l.ids, request_reference_ids = l.refs
FROM (
    SELECT i.provider_batch_id AS batch_id,
           array_agg(i.id ORDER BY i.position) AS ids,
           array_agg(i.request_reference_id ORDER BY i.position) AS refs
    FROM payroll_items i
    JOIN provider_batches pb ON pb.id = i.provider_batch_id
    WHERE pb.stage IN ('initiated', 'approving') AND i.request_reference_id IS NOT NULL
    GROUP BY i.provider_batch_id
) l
WHERE b.id = l.batch_id;
