-- reserve_slot --
-- GCRA with a burst of one, shared by every dispatcher: take the next free send slot (never earlier than now
-- nor than a 429 pause) and move it on by one interval. Returns how long to wait for the slot, measured on
-- the database's clock so that dispatchers on different machines agree.
UPDATE provider_rate
SET next_slot = greatest(next_slot, clock_timestamp(), paused_until) + make_interval(secs => $2)
WHERE name = $1
RETURNING extract(epoch FROM (next_slot - make_interval(secs => $2) - clock_timestamp()))::float8 AS wait_s,
          pause_epoch;

-- pause --
-- A 429: nobody sends before the pause ends. Slots already handed out are re-checked against the epoch.
UPDATE provider_rate
SET paused_until = greatest(paused_until, clock_timestamp() + make_interval(secs => $2)),
    next_slot = greatest(next_slot, clock_timestamp() + make_interval(secs => $2)),
    pause_epoch = pause_epoch + 1
WHERE name = $1
RETURNING pause_epoch;

-- take_send --
-- The last step before a request leaves: log it if fewer than max_rps requests still count (unanswered, or
-- answered within the last window), else say how long to wait (payrun_take_send in
-- sql/migrations/0007_send_log_fenced.sql).
SELECT sent, wait_s, pause_epoch, send_id, granted_after_s FROM payrun_take_send($1, $2, $3, $4, $5);

-- answered --
-- The request's answer (or its error) came back: from now on it counts for one more window only.
UPDATE provider_sends SET answered_at = clock_timestamp() WHERE id = $1 AND answered_at IS NULL;

-- unused --
-- A grant that was never used (its process was paused past GRANT_BOUND_S, or its lease ran out): the
-- request did not leave, so it must not hold a place.
DELETE FROM provider_sends WHERE id = $1;
