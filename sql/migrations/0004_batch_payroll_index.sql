-- Auditors and archiving look batches up by payroll.
CREATE INDEX provider_batches_payroll_idx ON provider_batches (payroll_id);
