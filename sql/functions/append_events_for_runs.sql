-- Appends the events of several runs for an engine session (a scheduler pass, a batch
-- start; warden.append_events_for_runs_unscoped does the work, p_batch as it takes it).
--
-- The tenant fence, as warden.append_events keeps it for one run: every run of the batch
-- must belong to a tenant in the session's scope (warden.in_scope), or the whole batch is
-- refused and nothing is appended. One query over the batch's tenants, before any lock
-- is taken; a run is found by its (tenant_id, run_id) entry, so the tenant given is the
-- run's. A superuser is not asked, as row-level security does not fence one either.
-- claim_jobs and complete_jobs do not come through here (a worker session carries no
-- scope): they check the worker's grants and leases and call the unscoped function.
CREATE OR REPLACE FUNCTION warden.append_events_for_runs(p_batch jsonb)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_tenant text;
BEGIN
    -- coalesce: an unset warden.tenant makes in_scope NULL, which refuses
    SELECT x.tenant_id INTO v_tenant
      FROM jsonb_to_recordset(p_batch) AS x(tenant_id text)
     WHERE NOT coalesce(warden.in_scope(x.tenant_id), false)
     LIMIT 1;
    IF FOUND AND NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r
                                WHERE r.rolname = session_user), false) THEN
        RAISE EXCEPTION 'not allowed to append to a run of tenant %: it is outside this '
                        'session''s tenant scope (warden.tenant)', v_tenant
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM warden.append_events_for_runs_unscoped(p_batch);
END $$;
-- Only the roles that write runs may call it (their grants: sql/grants/).
REVOKE EXECUTE ON FUNCTION warden.append_events_for_runs(jsonb) FROM PUBLIC;
