-- The trigger function of runs_flag_order (sql/triggers/runs.sql): a run whose flag
-- (needs_scheduling) an UPDATE sets draws its place in the flagging order (flag_seq),
-- under the shared lock of the scheduling floor taken first and held to commit
-- (docs/design.md#scheduling-floors). Every way a run is flagged (warden.wake_run,
-- warden.send_event, complete_jobs, the reconciler, policy drift, a child's end) passes
-- through here, so none can forget it. SECURITY DEFINER: the sequence is the owner's.
CREATE OR REPLACE FUNCTION warden.runs_flag_order() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('s' || chr(31) || 'runs', 14));
    NEW.flag_seq := nextval('warden.runs_flag_seq');
    RETURN NEW;
END $$;
