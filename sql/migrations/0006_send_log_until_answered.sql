-- The send log counts a request until one second after its answer came back, not after it left.
--
-- Why: the provider stamps a request when it arrives, somewhere between the moment we log it and the moment
-- its answer reaches us. Counting from the log time alone assumed the request arrives at once; on a busy
-- machine the first requests of a burst arrived 70+ ms late, so the provider saw 11 in one second (a 429).
-- Counted until answered_at + window, no lateness can break the limit: for any request K, every request
-- the provider stamped within the second before K was either still unanswered or answered within the last
-- window when K was logged, and the log lets fewer than max_rps such requests be.
--
-- A request never answered (a crashed dispatcher) counts as answered p_stamp_bound_s after it left: the
-- provider stamps a request on arrival, long before that.
ALTER TABLE provider_sends
    ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ADD COLUMN answered_at timestamptz;

-- Returns (sent, wait_s, pause_epoch, send_id): sent = true means the request may leave now and is logged
-- as send_id (sql/queries/rate.sql: answered records its answer). Otherwise wait_s says when to ask again:
-- when the window frees, or after p_poll_s when it is held by a request still waiting for its answer.
-- The 3-argument payrun_take_send of 0005 stays for dispatchers of the previous release during an upgrade.
CREATE FUNCTION payrun_take_send(
    p_name text, p_max integer, p_window_s float8, p_stamp_bound_s float8, p_poll_s float8
)
RETURNS TABLE (sent boolean, wait_s float8, pause_epoch bigint, send_id bigint)
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
        RETURN QUERY SELECT false, extract(epoch FROM v_paused - v_now)::float8, v_epoch, NULL::bigint;
        RETURN;
    END IF;
    -- The p_max-th latest moment until which a logged request still counts.
    SELECT least(coalesce(s.answered_at, 'infinity'), s.sent_at + v_bound) + v_window,
           s.answered_at IS NULL AND s.sent_at + v_bound > v_now
    INTO v_nth, v_open
    FROM provider_sends s
    WHERE s.name = p_name AND s.sent_at > v_now - v_window - v_bound
    ORDER BY 1 DESC OFFSET p_max - 1 LIMIT 1;
    IF v_nth > v_now THEN
        RETURN QUERY SELECT false,
            CASE WHEN v_open THEN p_poll_s ELSE extract(epoch FROM v_nth - v_now)::float8 END,
            v_epoch, NULL::bigint;
        RETURN;
    END IF;
    INSERT INTO provider_sends (name, sent_at) VALUES (p_name, v_now) RETURNING id INTO v_id;
    DELETE FROM provider_sends s
    WHERE s.name = p_name AND s.sent_at < v_now - (v_window + v_bound) * 5;
    RETURN QUERY SELECT true, 0::float8, v_epoch, v_id;
END $$;
