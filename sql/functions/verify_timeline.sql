-- True when the run's chain is intact: seq gapless from 1, every prev_hash links, every
-- hash recomputes, and the head stored on the run matches the last event (so a deleted
-- tail is caught too).
CREATE OR REPLACE FUNCTION warden.verify_timeline(p_run uuid) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e          record;
    v_expected bigint := 1;
    v_prev     text := repeat('0', 64);
    v_head_seq bigint;
    v_head     text;
BEGIN
    SELECT timeline_seq, timeline_hash INTO v_head_seq, v_head
      FROM warden.runs WHERE run_id = p_run;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_run USING ERRCODE = 'WD404';
    END IF;
    FOR e IN SELECT * FROM warden.timeline WHERE run_id = p_run ORDER BY seq LOOP
        IF e.seq <> v_expected OR e.prev_hash <> v_prev OR e.hash <> warden.event_hash(
               e.prev_hash, e.tenant_id, e.run_id, e.seq, e.at, e.kind, e.step_id, e.job_id,
               e.attempt, e.actor, e.data) THEN
            RETURN false;
        END IF;
        v_prev := e.hash;
        v_expected := v_expected + 1;
    END LOOP;
    RETURN v_expected - 1 = v_head_seq AND v_prev = v_head;
END $$;
