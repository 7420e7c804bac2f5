-- The timeline's partitions as retention sees them, oldest first: each month's runs, how
-- many are still open, finished at or after p_cutoff, or still needed by something open
-- (a notification not yet delivered or given up, or an open rerun whose chain of
-- rerun_of reaches the run: its approvals bar that run's starter, sql/triggers/
-- approvals.sql), and whether the partition may be archived and dropped. A partition may
-- be only when its whole month ends by the cutoff and the cutoff is at least a day old
-- (no run can be created in it any more: created_at is warden.now() at the insert), and
-- none of its runs is open, recent or needed. Owner only (no grant); one pass over runs.
CREATE OR REPLACE FUNCTION warden.retention_partitions(p_cutoff timestamptz)
RETURNS TABLE (month_start timestamptz, month_end timestamptz, runs bigint, open_runs bigint,
               recent_runs bigint, needed_runs bigint, droppable boolean)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE parts AS (
        SELECT make_timestamptz(substr(c.relname, 11, 4)::integer,
                                substr(c.relname, 16, 2)::integer, 1, 0, 0, 0, 'UTC') AS m
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'warden.timeline'::regclass
    ), held (tenant_id, run_id) AS (
        SELECT r.tenant_id, r.rerun_of FROM warden.runs r
         WHERE r.finished_at IS NULL AND r.rerun_of IS NOT NULL
        UNION
        SELECT r.tenant_id, r.rerun_of
          FROM held h JOIN warden.runs r ON r.tenant_id = h.tenant_id AND r.run_id = h.run_id
         WHERE r.rerun_of IS NOT NULL
    ), stats AS (
        SELECT date_trunc('month', r.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS m,
               count(*) AS runs,
               count(*) FILTER (WHERE r.finished_at IS NULL) AS open_runs,
               count(*) FILTER (WHERE r.finished_at >= p_cutoff) AS recent_runs,
               count(*) FILTER (WHERE r.finished_at < p_cutoff AND (
                   EXISTS (SELECT 1 FROM held h
                            WHERE h.tenant_id = r.tenant_id AND h.run_id = r.run_id)
                   OR EXISTS (SELECT 1 FROM warden.notifications n
                               WHERE n.tenant_id = r.tenant_id AND n.run_id = r.run_id
                                 AND n.status IN ('pending', 'delivering')))) AS needed_runs
          FROM warden.runs r
         GROUP BY 1
    )
    SELECT p.m, (p.m AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC',
           coalesce(s.runs, 0), coalesce(s.open_runs, 0), coalesce(s.recent_runs, 0),
           coalesce(s.needed_runs, 0),
           (p.m AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC' <= p_cutoff
           AND p_cutoff <= warden.now() - interval '1 day'
           AND coalesce(s.open_runs, 0) = 0 AND coalesce(s.recent_runs, 0) = 0
           AND coalesce(s.needed_runs, 0) = 0
      FROM parts p LEFT JOIN stats s ON s.m = p.m
     ORDER BY p.m
$$;
REVOKE EXECUTE ON FUNCTION warden.retention_partitions(timestamptz) FROM PUBLIC;
