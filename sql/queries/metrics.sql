-- backlog --
-- The outbox backlog for the Prometheus gauges, in one round trip. The payout gauges count `send_batch` rows
-- only: an employer's failing callback receiver (its `deliver_event` rows retried for days) must not look like
-- payouts stuck or dead; event rows have gauges of their own (events_*).
SELECT
  (SELECT count(*) FROM outbox WHERE status = 'pending' AND kind = 'send_batch') AS pending,
  (SELECT count(*) FROM outbox WHERE status = 'in_progress' AND kind = 'send_batch') AS in_progress,
  (SELECT count(*) FROM outbox WHERE status = 'dead' AND kind = 'send_batch') AS dead,
  -- `done` rows are never deleted: count them from the planner's estimate, not a scan of millions of rows.
  (SELECT greatest(reltuples::bigint, 0) FROM pg_class WHERE oid = 'outbox'::regclass) AS total_estimate,
  -- One status per subquery: each reads its own partial index; `status IN (...)` scans the whole table.
  (SELECT coalesce(extract(epoch FROM now() - least(
     (SELECT min(created_at) FROM outbox WHERE status = 'pending' AND kind = 'send_batch'),
     (SELECT min(created_at) FROM outbox WHERE status = 'in_progress' AND kind = 'send_batch'))), 0)::float8) AS oldest,
  (SELECT coalesce(extract(epoch FROM now() - min(available_at)), 0)::float8
     FROM outbox WHERE status = 'pending' AND available_at <= now() AND kind = 'send_batch') AS oldest_due,
  (SELECT count(*) FROM outbox WHERE status = 'pending' AND errors > 0 AND kind = 'send_batch')
    + (SELECT count(*) FROM outbox WHERE status = 'in_progress' AND errors > 0 AND kind = 'send_batch') AS with_errors,
  (SELECT count(*) FROM payroll_items WHERE needs_review) AS review,
  (SELECT count(*) FROM outbox WHERE status = 'pending' AND kind = 'deliver_event') AS events_pending,
  (SELECT count(*) FROM outbox WHERE status = 'in_progress' AND kind = 'deliver_event') AS events_in_progress,
  (SELECT count(*) FROM outbox WHERE status = 'dead' AND kind = 'deliver_event') AS events_dead,
  (SELECT count(*) FROM payroll_items i JOIN batch_rechecks r ON r.batch_id = i.provider_batch_id
     WHERE i.needs_review AND r.finished_at IS NULL AND r.gave_up_at IS NULL) AS rechecking;
