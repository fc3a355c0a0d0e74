-- IntaSend's callbacks, kept for audit. One row per (tracking_id, status_code): a repeated delivery adds
-- nothing. A callback never sets a state by itself; it only makes the dispatcher ask for the status sooner.
CREATE TABLE provider_callbacks (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tracking_id  text NOT NULL,
    status_code  text NOT NULL DEFAULT '',
    body         jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    deliveries   integer NOT NULL DEFAULT 1,
    CONSTRAINT provider_callbacks_tracking_status_key UNIQUE (tracking_id, status_code)
);
