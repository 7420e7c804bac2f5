-- Appends the events of several runs, each run's in order, with one INSERT for all of
-- them and one UPDATE of all their heads (append_events, set-based: a scheduler pass, a
-- batch start or a batch of completions writes thousands of events at once, and one
-- INSERT per event was most of what the timeline cost). p_batch: a JSON array of
-- {tenant_id, run_id, events}, at most one entry per run, events as append_events takes
-- them ({kind, step_id, job_id, attempt, actor, data}). Asks nobody's scope: the engine
-- reaches it through warden.append_events_for_runs, which checks the session's tenant
-- scope; claim_jobs calls it directly.
--
-- warden.chain_events_for_runs locks the runs, chains the events and inserts them; this
-- moves the heads it returns. complete_jobs calls the chain itself and moves the heads in
-- the same update as the runs' ends.
CREATE OR REPLACE FUNCTION warden.append_events_for_runs_unscoped(p_batch jsonb)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Generic plans from the first call, as the chain's (sql/functions/chain_events_for_runs.sql)
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    h_tenant text[];
    h_run    uuid[];
    h_seq    bigint[];
    h_hash   text[];
BEGIN
    -- one run's events (a claim of one run's jobs, a pass over one run): the single-run
    -- append, without the batch's loop over runs, its count check and its own head
    -- update (bench/README.md, session 14); same lock, seqs, hashes and errors
    IF jsonb_array_length(p_batch) = 1 AND jsonb_array_length(p_batch->0->'events') > 0 THEN
        PERFORM warden.append_events_unscoped(p_batch->0->>'tenant_id',
                                              (p_batch->0->>'run_id')::uuid,
                                              p_batch->0->'events');
        RETURN;
    END IF;
    SELECT c.tenant_ids, c.run_ids, c.seqs, c.hashes INTO h_tenant, h_run, h_seq, h_hash
      FROM warden.chain_events_for_runs(p_batch) c;
    -- one run left with events: by its primary key (a generic
    -- plan of the join below was a hash join over a scan of every run, for a batch of
    -- one: docs/design.md#plans-that-age); a batch of several: one join (an UPDATE per
    -- run cost 15-30 us a run more for a batch of 32, bench/README.md)
    IF cardinality(h_run) = 1 THEN
        UPDATE warden.runs u SET timeline_seq = h_seq[1], timeline_hash = h_hash[1]
         WHERE u.tenant_id = h_tenant[1] AND u.run_id = h_run[1];
    ELSIF cardinality(h_run) > 1 THEN
        UPDATE warden.runs u SET timeline_seq = x.seq, timeline_hash = x.hash
          FROM unnest(h_tenant, h_run, h_seq, h_hash) AS x(tenant_id, run_id, seq, hash)
         WHERE u.tenant_id = x.tenant_id AND u.run_id = x.run_id;
    END IF;
END $$;
-- No role but the owner may call it: it appends to any tenant's runs. claim_jobs
-- (SECURITY DEFINER, which checks the worker's grants and leases itself) calls it as the
-- owner; the engine calls warden.append_events_for_runs, which checks the
-- session's tenant scope first.
REVOKE EXECUTE ON FUNCTION warden.append_events_for_runs_unscoped(jsonb) FROM PUBLIC;
