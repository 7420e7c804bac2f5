-- The trigger function of runs_flag_lock (sql/triggers/runs.sql), once per INSERT
-- statement on warden.runs, before any row: the shared lock of the scheduling floor,
-- held to commit, taken before the rows draw their flag_seq (the column's default). So
-- warden.scheduling_floor, which only tries the exclusive lock, never computes a floor
-- while a run flagged below it may still be uncommitted (docs/design.md#scheduling-floors).
-- SECURITY DEFINER, like the other trigger functions that only the owner's code should
-- reach; no grant.
CREATE OR REPLACE FUNCTION warden.runs_flag_lock() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('s' || chr(31) || 'runs', 14));
    RETURN NULL;
END $$;
