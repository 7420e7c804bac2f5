-- Appends a run's events, in order, and returns the seq of the last one (the head's seq
-- for an empty array). p_events: a JSON array of {kind, step_id, job_id, attempt, actor,
-- data}. Asks nobody's scope: the engine reaches it through warden.append_events, which
-- checks the session's tenant scope; the job functions through append_event_unscoped.
--
-- The run row is locked first (FOR NO KEY UPDATE: it does not block the foreign-key
-- checks of rows that reference the run), so seq is gapless and follows commit order:
-- whoever appends next waits for this transaction and reads the head it leaves. One
-- update of the run's timeline head per call, however many events.
--
-- Each hash is HMAC-SHA-256 under the active chain key (sql/schema/55_chain_keys.sql),
-- inlined as two sha256 calls. SECURITY DEFINER to read the key; it signs only events it
-- appends itself, at the run's next seq after the head, so a caller gets no MAC of a row
-- it could put anywhere else (an existing (run, seq) is refused by the primary key).
-- Each event takes the run's created_at as run_created_at, the timeline's partition key:
-- this function is the only writer, so a run's events all sit in the run's partition.
--
-- The hashes are chained in the loop, in memory, and the events inserted with one
-- INSERT, as warden.chain_events_for_runs does for a batch of runs; the clock's shift is
-- read once per call (sql/functions/clock_timestamp.sql). A start in one call appends its
-- run's events here: one run needs neither the batch's JSON nor its loop over runs
-- (0.1 ms of a 1.3 ms start, bench/README.md, session 14).
CREATE OR REPLACE FUNCTION warden.append_events_unscoped(p_tenant text, p_run uuid,
                                                         p_events jsonb)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Generic plans from the first call: every statement is a keyed lookup or a write of one
-- run's events, whatever the arguments
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    e         jsonb;
    n         integer := 0;
    v_seq     bigint;
    v_prev    text;
    v_at      timestamptz;
    v_kind    warden.timeline_kind;
    v_key     integer;
    v_ipad    bytea;
    v_opad    bytea;
    v_created timestamptz;
    v_shift   interval;
    a_seq     bigint[] := '{}';
    a_at      timestamptz[] := '{}';
    a_kind    warden.timeline_kind[] := '{}';
    a_step    text[] := '{}';
    a_job     text[] := '{}';
    a_attempt integer[] := '{}';
    a_actor   text[] := '{}';
    a_data    jsonb[] := '{}';
    a_prev    text[] := '{}';
    a_hash    text[] := '{}';
BEGIN
    SELECT timeline_seq, timeline_hash, created_at INTO v_seq, v_prev, v_created
      FROM warden.runs WHERE tenant_id = p_tenant AND run_id = p_run
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run %/% not found', p_tenant, p_run USING ERRCODE = 'WD404';
    END IF;
    SELECT key_id, k_ipad, k_opad INTO v_key, v_ipad, v_opad
      FROM warden.chain_keys WHERE retired_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no active chain key: run `warden audit rotate-key`'
            USING ERRCODE = 'WD500';
    END IF;
    v_shift := coalesce((SELECT c.shift FROM warden.clock c), interval '0');
    FOR e IN SELECT value FROM jsonb_array_elements(p_events) LOOP
        v_seq := v_seq + 1;
        n := n + 1;
        v_at := pg_catalog.clock_timestamp() + v_shift;
        v_kind := (e->>'kind')::warden.timeline_kind;
        a_seq[n] := v_seq;
        a_at[n] := v_at;
        a_kind[n] := v_kind;
        a_step[n] := e->>'step_id';
        a_job[n] := e->>'job_id';
        a_attempt[n] := (e->>'attempt')::integer;
        a_actor[n] := e->>'actor';
        a_data[n] := coalesce(e->'data', '{}');
        a_prev[n] := v_prev;
        v_prev := encode(sha256(v_opad || sha256(v_ipad || warden.event_message(
                      v_prev, p_tenant, p_run, v_seq, v_at, v_kind, a_step[n], a_job[n],
                      a_attempt[n], a_actor[n], a_data[n]))), 'hex');
        a_hash[n] := v_prev;
    END LOOP;
    IF n = 0 THEN
        RETURN v_seq;
    END IF;
    INSERT INTO warden.timeline (tenant_id, run_id, seq, at, kind, step_id, job_id, attempt,
                                 actor, data, prev_hash, hash, key_id, run_created_at)
    SELECT p_tenant, p_run, t.seq, t.at, t.kind, t.step_id, t.job_id, t.attempt, t.actor,
           t.data, t.prev_hash, t.hash, v_key, v_created
      FROM unnest(a_seq, a_at, a_kind, a_step, a_job, a_attempt, a_actor, a_data, a_prev,
                  a_hash)
           AS t(seq, at, kind, step_id, job_id, attempt, actor, data, prev_hash, hash);
    UPDATE warden.runs SET timeline_seq = v_seq, timeline_hash = v_prev
     WHERE tenant_id = p_tenant AND run_id = p_run;
    RETURN v_seq;
END $$;
-- No role but the owner may call it: it appends to any tenant's run. The job functions
-- (SECURITY DEFINER, which check the worker's grants and lease themselves) call it as the
-- owner; the engine calls warden.append_events, which checks the session's tenant scope
-- first.
REVOKE EXECUTE ON FUNCTION warden.append_events_unscoped(text, uuid, jsonb) FROM PUBLIC;
