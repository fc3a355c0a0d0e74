-- The send log counts an answered request until one window after its answer, however late the answer came.
--
-- Why: 0006 stopped counting at least(answered_at, sent_at + stamp bound) + window, so a request answered
-- after the bound stopped counting while the provider may still have stamped it within the last second.
-- Now a request counts from its grant until:
--   answered: answered_at + window (the provider stamped it before it answered);
--   not answered: sent_at + p_stamp_bound_s + window (its process died or froze; the provider stamped it on
--   arrival, within the bound). The dispatcher never uses a grant later than GRANT_BOUND_S after asking
--   (dispatcher_service/limiter.py), so a request that leaves is still counted when it arrives.
-- Answers can come long after the grant, so the scan also reads the rows answered within the last window
-- (provider_sends_name_answered_at_idx), and rows are deleted only once they can never count again.
--
-- It also returns granted_after_s: how long after the statement reached the server the grant was made (the
-- wait for the provider_rate lock), so that the dispatcher measures how long *it* took to use a grant, not
-- how busy the database was. Callers of 0006's form (sent, wait_s, pause_epoch, send_id) keep working.
CREATE INDEX provider_sends_name_answered_at_idx ON provider_sends (name, answered_at);

DROP FUNCTION payrun_take_send(text, integer, float8, float8, float8);
CREATE FUNCTION payrun_take_send(
    p_name text, p_max integer, p_window_s float8, p_stamp_bound_s float8, p_poll_s float8
)
RETURNS TABLE (sent boolean, wait_s float8, pause_epoch bigint, send_id bigint, granted_after_s float8)
LANGUAGE plpgsql AS $$
DECLARE
    v_paused timestamptz;
    v_epoch bigint;
    v_window interval := make_interval(secs => p_window_s);
    v_bound interval := make_interval(secs => p_stamp_bound_s);
    v_nth timestamptz;
    v_open boolean;
    v_now timestamptz;
    v_id bigint;
BEGIN
    SELECT r.paused_until, r.pause_epoch INTO v_paused, v_epoch
    FROM provider_rate r WHERE r.name = p_name FOR UPDATE;
    v_now := clock_timestamp();
    IF v_paused > v_now THEN
        RETURN QUERY SELECT false, extract(epoch FROM v_paused - v_now)::float8, v_epoch, NULL::bigint, 0::float8;
        RETURN;
    END IF;
    -- The p_max-th latest moment until which a logged request still counts.
    SELECT coalesce(s.answered_at, s.sent_at + v_bound) + v_window,
           s.answered_at IS NULL AND s.sent_at + v_bound > v_now
    INTO v_nth, v_open
    FROM provider_sends s
    WHERE s.name = p_name
      AND (s.sent_at > v_now - v_window - v_bound OR s.answered_at > v_now - v_window)
    ORDER BY 1 DESC OFFSET p_max - 1 LIMIT 1;
    IF v_nth > v_now THEN
        RETURN QUERY SELECT false,
            CASE WHEN v_open THEN p_poll_s ELSE extract(epoch FROM v_nth - v_now)::float8 END,
            v_epoch, NULL::bigint, 0::float8;
        RETURN;
    END IF;
    INSERT INTO provider_sends (name, sent_at) VALUES (p_name, v_now) RETURNING id INTO v_id;
    -- Keep what may still count: answered within the last window, or unanswered and young enough that an
    -- answer may still come (a slow provider) and make it count again.
    DELETE FROM provider_sends s
    WHERE s.name = p_name AND s.sent_at < v_now - (v_window + v_bound) * 5
      AND (s.answered_at < v_now - v_window
           OR (s.answered_at IS NULL AND s.sent_at < v_now - interval '10 minutes'));
    RETURN QUERY SELECT true, 0::float8, v_epoch, v_id,
        greatest(0, extract(epoch FROM v_now - statement_timestamp()))::float8;
END $$;
