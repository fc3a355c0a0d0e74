-- payrun's schema. Money is numeric(14,2), never float. The rules a payroll must obey live here as
-- constraints, so that no code path (nor an operator's hand-written SQL) can break them.

CREATE TABLE employers (
    id           uuid PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- sha256 of the API key: a fast hash is right for a long random token (bcrypt would cost tens of
    -- milliseconds on every request, and buys nothing against a 256-bit secret).
    api_key_hash bytea NOT NULL UNIQUE CHECK (length(api_key_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE payrolls (
    id           uuid PRIMARY KEY,
    employer_id  uuid NOT NULL REFERENCES employers (id),
    reference    text NOT NULL CHECK (length(reference) BETWEEN 1 AND 100),
    currency     text NOT NULL CHECK (currency = 'KES'),
    status       text NOT NULL DEFAULT 'DRAFT'
                 CHECK (status IN ('DRAFT', 'PROCESSING', 'COMPLETED', 'PARTIALLY_FAILED', 'FAILED', 'NEEDS_REVIEW')),
    item_count   integer NOT NULL CHECK (item_count BETWEEN 1 AND 10000),
    total_amount numeric(14, 2) NOT NULL CHECK (total_amount > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    processing_started_at timestamptz,
    finished_at  timestamptz,
    CONSTRAINT payrolls_employer_reference_key UNIQUE (employer_id, reference)
);
-- GET /payrolls: newest first per employer, optionally by status, keyset-paginated on (created_at, id).
CREATE INDEX payrolls_employer_created_idx ON payrolls (employer_id, created_at DESC, id DESC);

CREATE TABLE payroll_items (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payroll_id           uuid NOT NULL REFERENCES payrolls (id),
    position             integer NOT NULL CHECK (position >= 0),
    name                 text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    account              text NOT NULL CHECK (length(account) BETWEEN 1 AND 64),
    amount               numeric(14, 2) NOT NULL CHECK (amount > 0),
    provider             text NOT NULL CHECK (provider IN ('MPESA-B2C', 'PESALINK', 'INTASEND')),
    bank_code            text,
    narrative            text CHECK (length(narrative) <= 22),
    status               text NOT NULL DEFAULT 'PENDING'
                         CHECK (status IN ('PENDING', 'SUBMITTED', 'PAID', 'FAILED', 'NEEDS_REVIEW', 'CANCELLED')),
    failure_reason       text,
    provider_reference   text,
    -- IntaSend's id for this item within the batch that carries it (set when the batch is persisted).
    request_reference_id text,
    provider_batch_id    bigint,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payroll_items_payroll_position_key UNIQUE (payroll_id, position),
    CONSTRAINT payroll_items_bank_code_check CHECK (provider <> 'PESALINK' OR bank_code IS NOT NULL),
    CONSTRAINT payroll_items_mpesa_amount_check
        CHECK (provider <> 'MPESA-B2C' OR amount BETWEEN 10 AND 150000)
);
CREATE INDEX payroll_items_provider_batch_idx ON payroll_items (provider_batch_id) WHERE provider_batch_id IS NOT NULL;

-- The transactional outbox (docs/audit.md, "The outbox"). One row asks the dispatcher to pay one batch of one
-- payroll's items; the API writes it in the same transaction that sets the payroll to PROCESSING.
CREATE TABLE outbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payroll_id   uuid NOT NULL REFERENCES payrolls (id),
    kind         text NOT NULL CHECK (kind IN ('send_batch')),
    payload      jsonb NOT NULL,
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'in_progress', 'done', 'dead')),
    attempts     integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    available_at timestamptz NOT NULL DEFAULT now(),
    locked_by    text,
    locked_until timestamptz,
    processed_at timestamptz,
    last_error   text,
    -- Fencing token: a new one on every claim. A dispatcher writes an outcome only while the row still
    -- carries the token it claimed with, so one whose lease ran out can no longer touch the row.
    lease_token  uuid,
    -- Consecutive failed attempts (provider unreachable, ...): at DISPATCHER_MAX_ERRORS the row goes `dead`.
    errors       integer NOT NULL DEFAULT 0,
    CONSTRAINT outbox_lease_check CHECK ((status = 'in_progress') = (locked_by IS NOT NULL AND locked_until IS NOT NULL AND lease_token IS NOT NULL)),
    CONSTRAINT outbox_processed_check CHECK ((status IN ('done', 'dead')) = (processed_at IS NOT NULL))
);
-- The claim reads only these two partial indexes, which hold just the live rows: they stay small however
-- many `done` rows accumulate.
CREATE INDEX outbox_pending_idx ON outbox (available_at, id) WHERE status = 'pending';
CREATE INDEX outbox_in_progress_idx ON outbox (locked_until) WHERE status = 'in_progress';
CREATE INDEX outbox_payroll_idx ON outbox (payroll_id);

-- What was sent to IntaSend for an outbox row: at most one live batch per row, persisted (tracking_id,
-- nonce, the initiate response) before it is approved. `stage` is how far the two-step flow got.
CREATE TABLE provider_batches (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id       bigint NOT NULL REFERENCES outbox (id),
    payroll_id      uuid NOT NULL REFERENCES payrolls (id),
    tracking_id     text NOT NULL UNIQUE,
    nonce           text,
    stage           text NOT NULL
                    CHECK (stage IN ('initiated', 'approving', 'approved', 'finished', 'rejected')),
    initiate_response jsonb NOT NULL,
    last_status     jsonb,
    status_code     text,
    status_polls    integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    approved_at     timestamptz,
    finished_at     timestamptz,
    -- A callback arrived: the dispatcher should ask for the batch's status now rather than at its next poll.
    callback_at     timestamptz,
    CONSTRAINT provider_batches_outbox_key UNIQUE (outbox_id)
);
ALTER TABLE payroll_items
    ADD CONSTRAINT payroll_items_provider_batch_fkey FOREIGN KEY (provider_batch_id) REFERENCES provider_batches (id);

-- Every attempt on an outbox row, for auditors: who claimed it, what was asked, what came back.
CREATE TABLE outbox_attempts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id   bigint NOT NULL REFERENCES outbox (id),
    attempt     integer NOT NULL,
    dispatcher  text NOT NULL,
    action      text NOT NULL,
    outcome     text NOT NULL,
    detail      text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_attempts_outbox_idx ON outbox_attempts (outbox_id, id);

-- Idempotency-Key: the first response to a (employer, key), stored in the transaction that did the work.
CREATE TABLE idempotency_keys (
    employer_id     uuid NOT NULL REFERENCES employers (id),
    key             text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash    bytea NOT NULL,
    response_status integer NOT NULL,
    response_body   jsonb NOT NULL,
    response_headers jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (employer_id, key)
);

-- The provider's rate limit, shared by every dispatcher: a single row per provider account holding the
-- next free send slot (GCRA with a burst of one) and a pause set after a 429.
CREATE TABLE provider_rate (
    name        text PRIMARY KEY,
    next_slot   timestamptz NOT NULL DEFAULT '-infinity',
    paused_until timestamptz NOT NULL DEFAULT '-infinity',
    pause_epoch bigint NOT NULL DEFAULT 0
);
INSERT INTO provider_rate (name) VALUES ('intasend');
