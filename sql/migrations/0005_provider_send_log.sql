-- The hard guarantee behind the provider rate limit: a log of when requests actually went out. Slots
-- (provider_rate.next_slot) space requests evenly; this log makes sure that however late a busy machine
-- wakes a request, no more than max_rps requests leave in any window. Unlogged: it only needs the last
-- second, and a server restart takes longer than that.
CREATE UNLOGGED TABLE provider_sends (
    name    text NOT NULL,
    sent_at timestamptz NOT NULL
);
CREATE INDEX provider_sends_name_sent_at_idx ON provider_sends (name, sent_at);

-- Take the right to send one request now, or say how long to wait. Serialised on the provider_rate row;
-- each statement of a plpgsql function sees what committed before it, so the count after the lock is exact.
-- Returns (sent, wait_s, pause_epoch): sent = true means the request may leave now and is logged.
CREATE FUNCTION payrun_take_send(p_name text, p_max integer, p_window_s float8)
RETURNS TABLE (sent boolean, wait_s float8, pause_epoch bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_paused timestamptz;
    v_epoch bigint;
    v_nth timestamptz;
    v_now timestamptz;
BEGIN
    SELECT r.paused_until, r.pause_epoch INTO v_paused, v_epoch
    FROM provider_rate r WHERE r.name = p_name FOR UPDATE;
    v_now := clock_timestamp();
    IF v_paused > v_now THEN
        RETURN QUERY SELECT false, extract(epoch FROM v_paused - v_now)::float8, v_epoch;
        RETURN;
    END IF;
    SELECT s.sent_at INTO v_nth FROM provider_sends s
    WHERE s.name = p_name AND s.sent_at > v_now - make_interval(secs => p_window_s)
    ORDER BY s.sent_at DESC OFFSET p_max - 1 LIMIT 1;
    IF v_nth IS NOT NULL THEN
        RETURN QUERY SELECT false, extract(epoch FROM v_nth + make_interval(secs => p_window_s) - v_now)::float8, v_epoch;
        RETURN;
    END IF;
    INSERT INTO provider_sends (name, sent_at) VALUES (p_name, v_now);
    DELETE FROM provider_sends s WHERE s.name = p_name AND s.sent_at < v_now - make_interval(secs => p_window_s * 5);
    RETURN QUERY SELECT true, 0::float8, v_epoch;
END $$;
