-- Chains and inserts the events of several runs, each run's in order, with one INSERT
-- for all of them, and returns each run's new head (its last seq and hash, one entry per
-- run, in (tenant, run) order) WITHOUT moving it: the caller must write the heads to the
-- runs in the same transaction, with whatever else it changes on those rows (a
-- completion's end, docs/design.md#the-timeline), so each run row takes one update, not
-- two. warden.append_events_for_runs_unscoped is this plus that update. p_batch: a JSON
-- array of {tenant_id, run_id, events}, at most one entry per run, events as
-- append_events takes them ({kind, step_id, job_id, attempt, actor, data}).
--
-- A caller that forgot the heads cannot fork a chain: the next append would number from
-- the old head and collide with these events' (tenant, run, seq) key. No role but the
-- owner may call it (it appends to any tenant's runs and leaves the head to its caller).
--
-- Same chain and same locks as append_events: the runs are locked FOR NO KEY UPDATE in
-- (tenant, run) order (each as the loop below finds it, in that order) and held to
-- commit, so each run's seq stays gapless and in commit order; each event's hash is the
-- HMAC of the previous one under the active chain key (sql/schema/55_chain_keys.sql). The
-- hashes are chained in this loop, in memory; only the writes are set-based. Arrays are
-- filled by index (in place), not by concatenation (a copy per element).
CREATE OR REPLACE FUNCTION warden.chain_events_for_runs(
    p_batch jsonb, OUT tenant_ids text[], OUT run_ids uuid[], OUT seqs bigint[],
    OUT hashes text[])
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Generic plans from the first call: its statements have one shape whatever the batch,
-- and planning them per call cost more than appending a run's few events
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    r         record;
    e         jsonb;
    n         integer := 0;
    h         integer := 0;
    v_seq     bigint;
    v_prev    text;
    v_at      timestamptz;
    v_kind    warden.timeline_kind;
    v_shift   interval;
    v_key     integer;
    v_ipad    bytea;
    v_opad    bytea;
    a_tenant  text[] := '{}';
    a_run     uuid[] := '{}';
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
    a_created timestamptz[] := '{}';  -- each event's partition key: its run's created_at
BEGIN
    tenant_ids := '{}';
    run_ids := '{}';
    seqs := '{}';
    hashes := '{}';
    SELECT key_id, k_ipad, k_opad INTO v_key, v_ipad, v_opad
      FROM warden.chain_keys WHERE retired_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no active chain key: run `warden audit rotate-key`'
            USING ERRCODE = 'WD500';
    END IF;
    -- warden.clock_timestamp(), with the clock's shift read once per call, not per event
    -- (sql/functions/clock_timestamp.sql: tests move the database clock)
    v_shift := coalesce((SELECT c.shift FROM warden.clock c), interval '0');
    -- Each run is found by its primary key from the batch's entries, in (tenant, run)
    -- order, and locked as it is found. A join the planner may choose (it made a
    -- generic plan of a hash join over a scan of every run for a batch of one, the batch
    -- size it cannot know) costs per run in the table, not per run in the batch
    -- (docs/design.md#plans-that-age).
    FOR r IN
        SELECT x.tenant_id, x.run_id, x.events, u.timeline_seq, u.timeline_hash, u.created_at
          FROM (SELECT b.tenant_id, b.run_id, b.events
                  FROM jsonb_to_recordset(p_batch) AS b(tenant_id text, run_id uuid,
                                                        events jsonb)
                 WHERE jsonb_array_length(b.events) > 0
                 ORDER BY b.tenant_id, b.run_id) AS x
         CROSS JOIN LATERAL (
               SELECT w.timeline_seq, w.timeline_hash, w.created_at FROM warden.runs w
                WHERE w.tenant_id = x.tenant_id AND w.run_id = x.run_id
                OFFSET 0 FOR NO KEY UPDATE) AS u
    LOOP
        v_seq := r.timeline_seq;
        v_prev := r.timeline_hash;
        FOR e IN SELECT value FROM jsonb_array_elements(r.events) LOOP
            v_seq := v_seq + 1;
            n := n + 1;
            v_at := pg_catalog.clock_timestamp() + v_shift;
            v_kind := (e->>'kind')::warden.timeline_kind;
            a_tenant[n] := r.tenant_id;
            a_run[n] := r.run_id;
            a_created[n] := r.created_at;
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
                          v_prev, r.tenant_id, r.run_id, v_seq, v_at, v_kind, a_step[n],
                          a_job[n], a_attempt[n], a_actor[n], a_data[n]))), 'hex');
            a_hash[n] := v_prev;
        END LOOP;
        h := h + 1;
        tenant_ids[h] := r.tenant_id;
        run_ids[h] := r.run_id;
        seqs[h] := v_seq;
        hashes[h] := v_prev;
    END LOOP;
    IF h < (SELECT count(*) FROM jsonb_array_elements(p_batch) b
             WHERE jsonb_array_length(b->'events') > 0) THEN
        RAISE EXCEPTION 'a run of the batch was not found' USING ERRCODE = 'WD404';
    END IF;
    IF n = 0 THEN
        RETURN;
    END IF;
    INSERT INTO warden.timeline (tenant_id, run_id, seq, at, kind, step_id, job_id, attempt,
                                 actor, data, prev_hash, hash, key_id, run_created_at)
    SELECT t.tenant_id, t.run_id, t.seq, t.at, t.kind, t.step_id, t.job_id, t.attempt,
           t.actor, t.data, t.prev_hash, t.hash, v_key, t.run_created_at
      FROM unnest(a_tenant, a_run, a_seq, a_at, a_kind, a_step, a_job, a_attempt, a_actor,
                  a_data, a_prev, a_hash, a_created)
           AS t(tenant_id, run_id, seq, at, kind, step_id, job_id, attempt, actor, data,
                prev_hash, hash, run_created_at);
END $$;
REVOKE EXECUTE ON FUNCTION warden.chain_events_for_runs(jsonb) FROM PUBLIC;
