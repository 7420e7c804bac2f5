"""append_events_for_runs_unscoped finds each run of its batch by its primary key (a LATERAL
lookup in (tenant, run) order) and updates a lone run's head by its key: on generic plans
made while warden.runs held a few hundred rows, the join of the batch to the runs was a
hash join over a scan of every run, for a batch of one (a claim of one job: ~3 ms, 1 ms
after; bench/README.md, "Plans that age").

Revision ID: 0022_append_by_run_key
Revises: 0021_dispatch_plans
Create Date: 2026-12-06

Frozen. The function text is a verbatim copy of
sql/functions/append_events_for_runs_unscoped.sql as of this change; the downgrade
restores the one before it.
"""

from alembic import op

revision = "0022_append_by_run_key"
down_revision = "0021_dispatch_plans"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;
-- Appends the events of several runs, each run's in order, with one INSERT for all of
-- them and one UPDATE of all their heads (append_events, set-based: a scheduler pass, a
-- batch start or a batch of completions writes thousands of events at once, and one
-- INSERT per event was most of what the timeline cost). p_batch: a JSON array of
-- {tenant_id, run_id, events}, at most one entry per run, events as append_events takes
-- them ({kind, step_id, job_id, attempt, actor, data}). Asks nobody's scope: the engine
-- reaches it through warden.append_events_for_runs, which checks the session's tenant
-- scope; claim_jobs and complete_jobs call it directly.
--
-- Same chain and same locks as append_events: the runs are locked FOR NO KEY UPDATE in
-- (tenant, run) order (each as the loop below finds it, in that order) and held to
-- commit, so each run's seq stays gapless and in commit order; each event's hash is the
-- HMAC of the previous one under the active chain key (sql/schema/55_chain_keys.sql). The
-- hashes are chained in this loop, in memory; only the writes are set-based. Arrays are
-- filled by index (in place), not by concatenation (a copy per element).
CREATE OR REPLACE FUNCTION warden.append_events_for_runs_unscoped(p_batch jsonb)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
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
    h_tenant  text[] := '{}';
    h_run     uuid[] := '{}';
    h_seq     bigint[] := '{}';
    h_hash    text[] := '{}';
BEGIN
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
        h_tenant[h] := r.tenant_id;
        h_run[h] := r.run_id;
        h_seq[h] := v_seq;
        h_hash[h] := v_prev;
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
    -- one run (a start, a claim or a completion of one job): by its primary key, for the
    -- reason above; a batch of several: one join (an UPDATE per run in the loop above
    -- cost 15-30 us a run more for a batch of 32, bench/README.md)
    IF h = 1 THEN
        UPDATE warden.runs u SET timeline_seq = h_seq[1], timeline_hash = h_hash[1]
         WHERE u.tenant_id = h_tenant[1] AND u.run_id = h_run[1];
    ELSE
        UPDATE warden.runs u SET timeline_seq = x.seq, timeline_hash = x.hash
          FROM unnest(h_tenant, h_run, h_seq, h_hash) AS x(tenant_id, run_id, seq, hash)
         WHERE u.tenant_id = x.tenant_id AND u.run_id = x.run_id;
    END IF;
END $$;
-- No role but the owner may call it: it appends to any tenant's runs. claim_jobs and
-- complete_jobs (SECURITY DEFINER, which check the worker's grants and leases themselves)
-- call it as the owner; the engine calls warden.append_events_for_runs, which checks the
-- session's tenant scope first.
REVOKE EXECUTE ON FUNCTION warden.append_events_for_runs_unscoped(jsonb) FROM PUBLIC;
RESET ROLE;
"""

DOWNGRADE = r"""
SET LOCAL ROLE warden_owner;
-- Appends the events of several runs, each run's in order, with one INSERT for all of
-- them and one UPDATE of all their heads (append_events, set-based: a scheduler pass, a
-- batch start or a batch of completions writes thousands of events at once, and one
-- INSERT per event was most of what the timeline cost). p_batch: a JSON array of
-- {tenant_id, run_id, events}, at most one entry per run, events as append_events takes
-- them ({kind, step_id, job_id, attempt, actor, data}). Asks nobody's scope: the engine
-- reaches it through warden.append_events_for_runs, which checks the session's tenant
-- scope; claim_jobs and complete_jobs call it directly.
--
-- Same chain and same locks as append_events: the runs are locked FOR NO KEY UPDATE in
-- (tenant, run) order (the lock is taken above the sort, so in that order) and held to
-- commit, so each run's seq stays gapless and in commit order; each event's hash is the
-- HMAC of the previous one under the active chain key (sql/schema/55_chain_keys.sql). The
-- hashes are chained in this loop, in memory; only the writes are set-based. Arrays are
-- filled by index (in place), not by concatenation (a copy per element).
CREATE OR REPLACE FUNCTION warden.append_events_for_runs_unscoped(p_batch jsonb)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
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
    h_tenant  text[] := '{}';
    h_run     uuid[] := '{}';
    h_seq     bigint[] := '{}';
    h_hash    text[] := '{}';
BEGIN
    SELECT key_id, k_ipad, k_opad INTO v_key, v_ipad, v_opad
      FROM warden.chain_keys WHERE retired_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no active chain key: run `warden audit rotate-key`'
            USING ERRCODE = 'WD500';
    END IF;
    -- warden.clock_timestamp(), with the clock's shift read once per call, not per event
    -- (sql/functions/clock_timestamp.sql: tests move the database clock)
    v_shift := coalesce((SELECT c.shift FROM warden.clock c), interval '0');
    FOR r IN
        SELECT x.tenant_id, x.run_id, x.events, u.timeline_seq, u.timeline_hash, u.created_at
          FROM jsonb_to_recordset(p_batch) AS x(tenant_id text, run_id uuid, events jsonb)
          JOIN warden.runs u ON u.tenant_id = x.tenant_id AND u.run_id = x.run_id
         WHERE jsonb_array_length(x.events) > 0
         ORDER BY x.tenant_id, x.run_id
           FOR NO KEY UPDATE OF u
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
        h_tenant[h] := r.tenant_id;
        h_run[h] := r.run_id;
        h_seq[h] := v_seq;
        h_hash[h] := v_prev;
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
    UPDATE warden.runs u SET timeline_seq = x.seq, timeline_hash = x.hash
      FROM unnest(h_tenant, h_run, h_seq, h_hash) AS x(tenant_id, run_id, seq, hash)
     WHERE u.tenant_id = x.tenant_id AND u.run_id = x.run_id;
END $$;
-- No role but the owner may call it: it appends to any tenant's runs. claim_jobs and
-- complete_jobs (SECURITY DEFINER, which check the worker's grants and leases themselves)
-- call it as the owner; the engine calls warden.append_events_for_runs, which checks the
-- session's tenant scope first.
REVOKE EXECUTE ON FUNCTION warden.append_events_for_runs_unscoped(jsonb) FROM PUBLIC;
RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
