-- Appends a run's events, in order, and returns the seq of the last one (the head's seq
-- for an empty array). p_events: a JSON array of {kind, step_id, job_id, attempt, actor,
-- data}.
--
-- The run row is locked first (FOR NO KEY UPDATE: it does not block the foreign-key
-- checks of rows that reference the run), so seq is gapless and follows commit order:
-- whoever appends next waits for this transaction and reads the head it leaves. One
-- update of the run's timeline head per call, however many events.
CREATE OR REPLACE FUNCTION warden.append_events(p_tenant text, p_run uuid, p_events jsonb)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e      jsonb;
    v_seq  bigint;
    v_prev text;
    v_at   timestamptz;
    v_hash text;
    v_kind warden.timeline_kind;
BEGIN
    SELECT timeline_seq, timeline_hash INTO v_seq, v_prev
      FROM warden.runs WHERE tenant_id = p_tenant AND run_id = p_run
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run %/% not found', p_tenant, p_run USING ERRCODE = 'WD404';
    END IF;
    FOR e IN SELECT value FROM jsonb_array_elements(p_events) LOOP
        v_seq := v_seq + 1;
        v_at := warden.clock_timestamp();
        v_kind := (e->>'kind')::warden.timeline_kind;
        v_hash := warden.event_hash(v_prev, p_tenant, p_run, v_seq, v_at, v_kind,
                                    e->>'step_id', e->>'job_id', (e->>'attempt')::integer,
                                    e->>'actor', coalesce(e->'data', '{}'));
        INSERT INTO warden.timeline (tenant_id, run_id, seq, at, kind, step_id, job_id,
                                     attempt, actor, data, prev_hash, hash)
        VALUES (p_tenant, p_run, v_seq, v_at, v_kind, e->>'step_id', e->>'job_id',
                (e->>'attempt')::integer, e->>'actor', coalesce(e->'data', '{}'), v_prev,
                v_hash);
        v_prev := v_hash;
    END LOOP;
    UPDATE warden.runs SET timeline_seq = v_seq, timeline_hash = v_prev
     WHERE tenant_id = p_tenant AND run_id = p_run;
    RETURN v_seq;
END $$;
