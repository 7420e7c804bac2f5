-- Before an approval is stored (sql/triggers/approvals.sql): requested_by must be whoever
-- started its run, and barred becomes every principal that started a run of the rerun
-- chain (the run, the run it reruns, and so on back to the original), together with any
-- names the inserter passed. An inserter can bar more principals, never fewer. The
-- constraint approvals_no_rerun_chain_approval then refuses a decision by any of them.
CREATE OR REPLACE FUNCTION warden.approval_bar_rerun_chain() RETURNS trigger
-- as the owner: row-level security must never hide an ancestor run from the walk below
-- (the inserting engine session is scoped to one tenant, but a smaller `barred` would let
-- a starter decide)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    starter text;
    starters text[];
BEGIN
    SELECT created_by INTO starter FROM warden.runs
     WHERE tenant_id = NEW.tenant_id AND run_id = NEW.run_id;
    IF NOT FOUND THEN
        RETURN NEW;  -- no such run: the foreign key to its step refuses the row
    END IF;
    IF NEW.requested_by IS DISTINCT FROM starter THEN
        RAISE EXCEPTION 'an approval of run % is requested by %, who started it, not by %',
            NEW.run_id, starter, NEW.requested_by USING ERRCODE = 'WD010';
    END IF;
    -- UNION, not UNION ALL: were rerun_of ever to form a cycle, the walk ends instead of
    -- looping. A rerun is always of the same tenant. An ancestor that retention archived
    -- (warden.archived_runs keeps its starter and rerun_of) still bars its starter.
    WITH RECURSIVE chain (run_id, rerun_of, created_by) AS (
        SELECT r.run_id, r.rerun_of, r.created_by FROM warden.runs r
         WHERE r.tenant_id = NEW.tenant_id AND r.run_id = NEW.run_id
        UNION
        SELECT r.run_id, r.rerun_of, r.created_by
          FROM chain c
          JOIN (SELECT a.tenant_id, a.run_id, a.rerun_of, a.created_by FROM warden.runs a
                UNION ALL
                SELECT a.tenant_id, a.run_id, a.rerun_of, a.created_by
                  FROM warden.archived_runs a) AS r
            ON r.tenant_id = NEW.tenant_id AND r.run_id = c.rerun_of
    )
    SELECT array_agg(DISTINCT p ORDER BY p) INTO starters
      FROM (SELECT created_by FROM chain
            UNION ALL SELECT unnest(coalesce(NEW.barred, '{}'))) AS named (p)
     WHERE p IS NOT NULL;
    NEW.barred := starters;
    RETURN NEW;
END $$;
