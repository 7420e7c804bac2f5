-- The first thing wrong with each broken chain: of one run (p_run), or of every run of a
-- tenant (p_tenant) or of all tenants (both NULL). A run is listed once, with the seq and
-- what differs: an event (warden.timeline_check), or the head stored on the run not being
-- the last event (a deleted tail). No row: every chain asked about holds. SECURITY
-- DEFINER (the check reads the chain keys); it returns no hash, so anyone may call it.
-- One run is its own query, with plain equalities on (tenant_id, run_id): PL/pgSQL may
-- reuse a generic plan after a few calls, and only then does it still use the primary key
-- (verify_timeline is called once per run by `WHERE NOT warden.verify_timeline(run_id)`).
--
-- The tenant fence of row-level security (sql/grants/30_row_security.sql), kept by a
-- function that bypasses it: an engine session is answered only about runs of the tenants
-- in its scope (warden.in_scope). A run of another tenant is not found, with the same
-- error as a run that does not exist, so its existence does not leak; the listing is of
-- the scoped tenant's runs alone, and of no run without a scope. Whoever row-level
-- security shows every tenant (scope '*', auditors, the owner, a superuser:
-- warden.sees_every_tenant) is answered about every run. One run: the scope is checked
-- on the tenant the run's lookup found, in_scope first (sees_every_tenant, two role
-- lookups, only when it says no), so the cost per run of the '*' loops is unchanged.
CREATE OR REPLACE FUNCTION warden.timeline_problems(p_tenant text, p_run uuid)
RETURNS TABLE (tenant_id text, run_id uuid, seq bigint, problem text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_tenant text;
    v_seq    bigint;
    v_hash   text;
    v_scope  text;
BEGIN
    IF p_run IS NOT NULL THEN
        SELECT r.tenant_id, r.timeline_seq, r.timeline_hash INTO v_tenant, v_seq, v_hash
          FROM warden.runs r
         WHERE r.run_id = p_run AND (p_tenant IS NULL OR r.tenant_id = p_tenant);
        IF NOT FOUND OR NOT (coalesce(warden.in_scope(v_tenant), false)
                             OR warden.sees_every_tenant()) THEN
            RAISE EXCEPTION 'run % not found', p_run USING ERRCODE = 'WD404';
        END IF;
        RETURN QUERY
        SELECT c.tenant_id, c.run_id, c.seq, c.problem FROM warden.timeline_check c
         WHERE c.tenant_id = v_tenant AND c.run_id = p_run AND c.problem IS NOT NULL
         ORDER BY c.seq LIMIT 1;
        IF NOT FOUND THEN
            RETURN QUERY
            SELECT v_tenant, p_run, greatest(v_seq, coalesce(l.seq, 0)),
                   'the head stored on the run (seq ' || v_seq
                   || ') is not the last event (seq ' || coalesce(l.seq, 0) || ')'
              FROM (SELECT max(t.seq) AS seq FROM warden.timeline t
                     WHERE t.tenant_id = v_tenant AND t.run_id = p_run) m
              LEFT JOIN warden.timeline l
                     ON l.tenant_id = v_tenant AND l.run_id = p_run AND l.seq = m.seq
             WHERE coalesce(l.seq, 0) <> v_seq OR coalesce(l.hash, repeat('0', 64)) <> v_hash;
        END IF;
        RETURN;
    END IF;
    IF NOT warden.sees_every_tenant() THEN
        -- scoped to one tenant (any other scope than '*' names one): its runs only, the
        -- listing of one tenant below; unset or empty, none
        v_scope := nullif(current_setting('warden.tenant', true), '');
        IF v_scope IS NULL OR p_tenant <> v_scope THEN
            RETURN;
        END IF;
        p_tenant := v_scope;
    END IF;
    RETURN QUERY
    SELECT DISTINCT ON (x.tenant_id, x.run_id) x.tenant_id, x.run_id, x.seq, x.problem
      FROM (SELECT c.tenant_id, c.run_id, c.seq, c.problem
              FROM warden.timeline_check c
             WHERE c.problem IS NOT NULL AND (p_tenant IS NULL OR c.tenant_id = p_tenant)
            UNION ALL
            SELECT r.tenant_id, r.run_id, greatest(r.timeline_seq, coalesce(l.seq, 0)),
                   'the head stored on the run (seq ' || r.timeline_seq
                   || ') is not the last event (seq ' || coalesce(l.seq, 0) || ')'
              FROM warden.runs r
              LEFT JOIN LATERAL (SELECT t.seq, t.hash FROM warden.timeline t
                                  WHERE t.tenant_id = r.tenant_id AND t.run_id = r.run_id
                                  ORDER BY t.seq DESC LIMIT 1) l ON true
             WHERE (p_tenant IS NULL OR r.tenant_id = p_tenant)
               AND (coalesce(l.seq, 0) <> r.timeline_seq
                    OR coalesce(l.hash, repeat('0', 64)) <> r.timeline_hash)) x
     ORDER BY x.tenant_id, x.run_id, x.seq;
END $$;
