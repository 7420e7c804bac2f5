-- The advisory lock that orders an event's arrival against a wait's beginning for one
-- (tenant, name, key), so neither can miss the other (docs/workflows.md#events):
-- warden.send_event takes it (waiting) before it inserts and wakes; the scheduler tries it
-- (never waiting, since it holds run locks that send_event may wait for) before a wait
-- step begins and looks for a kept event. Whichever commits second sees the first.
CREATE OR REPLACE FUNCTION warden.event_lock(p_tenant text, p_name text, p_key text)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT hashtextextended('warden.event' || chr(31) || p_tenant || chr(31) || p_name
                            || chr(31) || p_key, 0)
$$;
