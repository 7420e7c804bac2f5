-- Appends a run's events for an engine session and returns the seq of the last one
-- (warden.append_events_unscoped does the work: lock, seq, chain; p_events as it takes
-- them).
--
-- The tenant fence of row-level security (sql/grants/30_row_security.sql), kept by a
-- function that bypasses it: the session may append only to a run of a tenant in its
-- scope (warden.in_scope: the tenant its transaction carries in warden.tenant, or '*'),
-- so an API request of one tenant cannot add a correctly chained event to another
-- tenant's run. The run is found by (p_tenant, p_run), so checking the tenant given is
-- checking the run's, before any read or lock (and a refusal tells nothing of the run).
-- A superuser is not asked, as row-level security does not fence one either (tests, the
-- embedded demo); coalesce: an unset warden.tenant makes in_scope NULL, which refuses.
-- The job functions do not come through here (a worker session carries no scope): they
-- check the worker's grant and lease and call append_event_unscoped as the owner.
CREATE OR REPLACE FUNCTION warden.append_events(p_tenant text, p_run uuid, p_events jsonb)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT coalesce(warden.in_scope(p_tenant), false)
       AND NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r
                          WHERE r.rolname = session_user), false) THEN
        RAISE EXCEPTION 'not allowed to append to a run of tenant %: it is outside this '
                        'session''s tenant scope (warden.tenant)', p_tenant
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN warden.append_events_unscoped(p_tenant, p_run, p_events);
END $$;
-- Only the roles that write runs may call it (their grants: sql/grants/).
REVOKE EXECUTE ON FUNCTION warden.append_events(text, uuid, jsonb) FROM PUBLIC;
