-- Dead rows and items needing review are what operators look for first: keep those look-ups cheap.
CREATE INDEX outbox_dead_idx ON outbox (processed_at) WHERE status = 'dead';
CREATE INDEX payroll_items_review_idx ON payroll_items (payroll_id) WHERE status = 'NEEDS_REVIEW';
