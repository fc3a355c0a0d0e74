-- backlog --
-- The outbox backlog for the Prometheus gauges, in one round trip.
SELECT
  (SELECT count(*) FROM outbox WHERE status = 'pending') AS pending,
  (SELECT count(*) FROM outbox WHERE status = 'in_progress') AS in_progress,
  (SELECT count(*) FROM outbox WHERE status = 'dead') AS dead,
  -- `done` rows are never deleted: count them from the planner's estimate, not a scan of millions of rows.
  (SELECT greatest(reltuples::bigint, 0) FROM pg_class WHERE oid = 'outbox'::regclass) AS total_estimate,
  -- One status per subquery: each reads its own partial index; `status IN (...)` scans the whole table.
  (SELECT coalesce(extract(epoch FROM now() - least(
     (SELECT min(created_at) FROM outbox WHERE status = 'pending'),
     (SELECT min(created_at) FROM outbox WHERE status = 'in_progress'))), 0)::float8) AS oldest,
  (SELECT coalesce(extract(epoch FROM now() - min(available_at)), 0)::float8
     FROM outbox WHERE status = 'pending' AND available_at <= now()) AS oldest_due,
  (SELECT count(*) FROM outbox WHERE status = 'pending' AND errors > 0)
    + (SELECT count(*) FROM outbox WHERE status = 'in_progress' AND errors > 0) AS with_errors,
  (SELECT count(*) FROM payroll_items WHERE status = 'NEEDS_REVIEW') AS review,
  (SELECT count(*) FROM payroll_items i JOIN batch_rechecks r ON r.batch_id = i.provider_batch_id
     WHERE i.status = 'NEEDS_REVIEW' AND r.finished_at IS NULL AND r.gave_up_at IS NULL) AS rechecking;
