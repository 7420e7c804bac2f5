-- The scheduler's floor (docs/design.md#scheduling-floors): a flag_seq below which no
-- flagged run is, nor can be flagged later, or NULL when that cannot be known right now.
-- A scheduler passes the floor it had (p_from: every flagged run is at or above it) and
-- takes flagged runs from the answer up (runs_lock_for_scheduling), so it never walks
-- the index entries of the flags cleared since, which an old snapshot keeps.
--
-- Only when the exclusive advisory lock is free at once: every transaction that flags a
-- run holds the shared one from before it draws the run's flag_seq to its commit
-- (sql/triggers/runs.sql). With the lock, no such transaction is open, and the reads
-- below (READ COMMITTED: a snapshot taken after the lock) see every flag committed
-- before; any later flag draws a higher number. NULL when the lock is busy: the caller
-- keeps its floor. Waits for nothing. SECURITY DEFINER: it reads every tenant's runs and
-- the sequence; granted to the engine (the scheduler).
CREATE OR REPLACE FUNCTION warden.scheduling_floor(p_from bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_floor bigint;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'warden.scheduling_floor must run in READ COMMITTED'
            USING ERRCODE = '25000',
                  HINT = 'its read must see every flag committed before the lock';
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtextextended('s' || chr(31) || 'runs', 14)) THEN
        RETURN NULL;
    END IF;
    SELECT r.flag_seq INTO v_floor FROM warden.runs r
     WHERE r.needs_scheduling AND r.flag_seq >= p_from
     ORDER BY r.flag_seq LIMIT 1;
    IF v_floor IS NULL THEN
        -- nothing flagged: every number drawn so far belongs to a finished transaction
        SELECT CASE WHEN s.is_called THEN s.last_value + 1 ELSE s.last_value END
          INTO v_floor FROM warden.runs_flag_seq s;
    END IF;
    RETURN v_floor;
END $$;
