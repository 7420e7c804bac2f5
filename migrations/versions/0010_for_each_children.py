"""for_each items and child runs: warden.step_items, jobs.item_index, and the parent
link of a child run.

Revision ID: 0010_for_each_children
Revises: 0009_conditions_timers_events
Create Date: 2026-12-06

Frozen. Adds warden.step_items (one row per element of a for_each step, with its own
attempts and outcome), jobs.item_index (the job id becomes run:step[i]@attempt for an
item; jobs_one_row_per_attempt and jobs_id_format include it), runs.parent_run_id /
parent_step_id / parent_item_index / parent_attempt (one child per attempt:
runs_one_child_per_attempt), runs.pins (the child versions resolved at start) and
runs.depth; the step type 'workflow' and the timeline kinds foreach.expanded,
foreach.ended, child.started and child.ended (docs/workflows.md). end_attempt,
complete_jobs and release_job end an item's attempt on its item. An approval may hold an
item's job (approvals_job_of_own_step), one pending per item (approvals_one_pending_per_step).
A downgrade deletes item jobs and their approvals and cannot drop the enum values.
"""

from alembic import op

revision = "0010_for_each_children"
down_revision = "0009_conditions_timers_events"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;
SET LOCAL check_function_bodies = off;
-- a downgrade cannot drop enum values: IF NOT EXISTS keeps a re-upgrade working
ALTER TYPE warden.step_type ADD VALUE IF NOT EXISTS 'workflow';
ALTER TYPE warden.timeline_kind ADD VALUE IF NOT EXISTS 'foreach.expanded';
ALTER TYPE warden.timeline_kind ADD VALUE IF NOT EXISTS 'foreach.ended';
ALTER TYPE warden.timeline_kind ADD VALUE IF NOT EXISTS 'child.started';
ALTER TYPE warden.timeline_kind ADD VALUE IF NOT EXISTS 'child.ended';

ALTER TABLE warden.runs
    ADD COLUMN parent_run_id uuid,
    ADD COLUMN parent_step_id text,
    ADD COLUMN parent_item_index integer,
    ADD COLUMN parent_attempt integer,
    ADD COLUMN pins jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN depth integer NOT NULL DEFAULT 0 CHECK (depth >= 0),
    ADD CONSTRAINT runs_parent FOREIGN KEY (tenant_id, parent_run_id)
        REFERENCES warden.runs (tenant_id, run_id),
    ADD CONSTRAINT runs_parent_complete CHECK (
        (parent_run_id IS NULL) = (parent_step_id IS NULL)
        AND (parent_run_id IS NULL) = (parent_attempt IS NULL)
        AND (parent_run_id IS NULL) = (depth = 0));
CREATE UNIQUE INDEX runs_one_child_per_attempt ON warden.runs
    (tenant_id, parent_run_id, parent_step_id, coalesce(parent_item_index, -1), parent_attempt)
    WHERE parent_run_id IS NOT NULL;

CREATE TABLE warden.step_items (
    tenant_id       text               NOT NULL,
    run_id          uuid               NOT NULL,
    step_id         text               NOT NULL,
    item_index      integer            NOT NULL CHECK (item_index >= 0),
    status          warden.step_status NOT NULL DEFAULT 'pending',
    item            jsonb,
    attempts        integer            NOT NULL DEFAULT 0,
    max_attempts    integer            NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
    retry_at        timestamptz,
    output          jsonb,
    error           jsonb,
    started_at      timestamptz,
    finished_at     timestamptz,
    PRIMARY KEY (tenant_id, run_id, step_id, item_index),
    FOREIGN KEY (tenant_id, run_id, step_id) REFERENCES warden.steps (tenant_id, run_id, step_id),
    CONSTRAINT step_items_finished_iff_final CHECK (
        (finished_at IS NOT NULL) =
        (status IN ('succeeded', 'failed', 'denied', 'cancelled', 'timed_out', 'skipped'))),
    CONSTRAINT step_items_retry_only_while_running CHECK (retry_at IS NULL OR status = 'running')
);

ALTER TABLE warden.jobs ADD COLUMN item_index integer;
ALTER TABLE warden.jobs DROP CONSTRAINT jobs_one_row_per_attempt;
ALTER TABLE warden.jobs ADD CONSTRAINT jobs_one_row_per_attempt UNIQUE NULLS NOT DISTINCT
    (tenant_id, run_id, step_id, item_index, attempt);
ALTER TABLE warden.jobs ADD CONSTRAINT jobs_of_item FOREIGN KEY
    (tenant_id, run_id, step_id, item_index)
    REFERENCES warden.step_items (tenant_id, run_id, step_id, item_index);
ALTER TABLE warden.jobs DROP CONSTRAINT jobs_id_format;
ALTER TABLE warden.jobs ADD CONSTRAINT jobs_id_format CHECK (job_id = run_id::text || ':' || step_id
    || coalesce('[' || item_index || ']', '') || '@' || attempt);

-- After an attempt ended without success: schedule the next attempt if the step has one
-- left and the error is retryable, else end the step with p_step_status. Internal to the
-- job protocol (fail_job, release_job, reap_expired_jobs). The attempt of a for_each
-- item (j.item_index set) schedules or ends that item, with the retry contract of its
-- step: the scheduler then decides what the step's outcome is (engine/scheduling/fanout.py).
CREATE OR REPLACE FUNCTION warden.end_attempt(
    j warden.jobs, p_step_status warden.step_status, p_error jsonb, p_retryable boolean
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s       warden.steps;
    i       warden.step_items;
    v_delay double precision;
BEGIN
    -- lock order: the run before its steps (callers normally hold it already)
    PERFORM 1 FROM warden.runs WHERE tenant_id = j.tenant_id AND run_id = j.run_id
        FOR NO KEY UPDATE;
    IF j.item_index IS NOT NULL THEN
        SELECT * INTO s FROM warden.steps
         WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id;
        SELECT * INTO i FROM warden.step_items
         WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
           AND item_index = j.item_index
           FOR NO KEY UPDATE;
        IF i.status <> 'running' THEN
            RETURN;  -- the step or the run ended meanwhile: nothing to schedule
        END IF;
        IF p_retryable AND j.attempt < i.max_attempts THEN
            v_delay := least(s.backoff_ms * power(s.multiplier, j.attempt - 1), s.max_backoff_ms);
            v_delay := v_delay * (1 + s.jitter * random());
            UPDATE warden.step_items
               SET retry_at = warden.now() + make_interval(secs => v_delay / 1000.0),
                   error = p_error
             WHERE tenant_id = i.tenant_id AND run_id = i.run_id AND step_id = i.step_id
               AND item_index = i.item_index;
            PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.retry_scheduled',
                j.step_id, j.job_id, j.attempt, NULL, jsonb_build_object(
                    'item_index', j.item_index, 'next_attempt', j.attempt + 1,
                    'delay_ms', round(v_delay),
                    'retry_at', warden.now() + make_interval(secs => v_delay / 1000.0)));
        ELSE
            UPDATE warden.step_items SET status = p_step_status, error = p_error,
                                         finished_at = warden.now(), retry_at = NULL
             WHERE tenant_id = i.tenant_id AND run_id = i.run_id AND step_id = i.step_id
               AND item_index = i.item_index;
        END IF;
        PERFORM warden.wake_run(j.tenant_id, j.run_id);
        RETURN;
    END IF;
    SELECT * INTO s FROM warden.steps
     WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
       FOR NO KEY UPDATE;
    IF s.status <> 'running' THEN
        RETURN;  -- the run was cancelled or the step already ended: nothing to schedule
    END IF;
    IF p_retryable AND j.attempt < s.max_attempts THEN
        -- backoff_ms * multiplier^(n-1), capped; jitter only ever adds, so no retry comes
        -- earlier than the configured backoff
        v_delay := least(s.backoff_ms * power(s.multiplier, j.attempt - 1), s.max_backoff_ms);
        v_delay := v_delay * (1 + s.jitter * random());
        UPDATE warden.steps
           SET retry_at = warden.now() + make_interval(secs => v_delay / 1000.0),
               error = p_error
         WHERE tenant_id = s.tenant_id AND run_id = s.run_id AND step_id = s.step_id;
        PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.retry_scheduled', j.step_id,
            j.job_id, j.attempt, NULL, jsonb_build_object(
                'next_attempt', j.attempt + 1, 'delay_ms', round(v_delay),
                'retry_at', warden.now() + make_interval(secs => v_delay / 1000.0)));
    ELSE
        UPDATE warden.steps SET status = p_step_status, error = p_error,
                                finished_at = warden.now(), retry_at = NULL
         WHERE tenant_id = s.tenant_id AND run_id = s.run_id AND step_id = s.step_id;
    END IF;
    PERFORM warden.wake_run(j.tenant_id, j.run_id);
END $$;

-- Completes a worker's batch of jobs in one statement (one commit for all of them: with
-- durability on, a commit per job capped a worker at a few hundred jobs/s). Each job is
-- fenced like every worker write (warden.lease_held), and gets an outcome row instead of
-- an error, so one stale lease does not throw the rest of the batch away: 'completed',
-- or why the write was fenced (warden.fence_outcome: 'lease_lost', 'cancelled',
-- 'not_found').
CREATE OR REPLACE FUNCTION warden.complete_jobs(
    job_ids text[], lease_tokens uuid[], results jsonb[])
RETURNS TABLE (job_id text, outcome text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_done warden.jobs[];
    r      record;
BEGIN
    IF cardinality(job_ids) IS DISTINCT FROM cardinality(lease_tokens)
       OR cardinality(job_ids) IS DISTINCT FROM cardinality(results) THEN
        RAISE EXCEPTION 'job_ids, lease_tokens and results must have the same length'
            USING ERRCODE = '22023';
    END IF;
    -- Lock order jobs -> runs -> steps. The jobs are locked by this UPDATE (each has one
    -- lease holder, so two completers never contend for a job); the runs are then locked
    -- in (tenant, run) order by append_events, as claim_jobs and the reaper do. The
    -- completed rows are kept in a variable, not a temporary table: a temp table per
    -- call would churn the system catalogs on the hottest path there is.
    WITH input AS (
        SELECT * FROM unnest(complete_jobs.job_ids, complete_jobs.lease_tokens,
                             complete_jobs.results) AS u(job_id, lease_token, result)
    ), done AS (
        -- job_id = ANY(...) lets jobs_by_job_id find the rows whatever the planner makes
        -- of the join (it chose a hash join over a scan of all of warden.jobs per batch)
        UPDATE warden.jobs t
           SET status = 'succeeded', result = i.result, finished_at = warden.now()
          FROM input i
         WHERE t.job_id = ANY (complete_jobs.job_ids) AND t.job_id = i.job_id
           AND warden.lease_held(t, i.lease_token)
        RETURNING t AS j
    )
    SELECT coalesce(array_agg(d.j ORDER BY (d.j).tenant_id, (d.j).run_id, (d.j).job_id), '{}')
      INTO v_done FROM done d;

    FOR r IN
        SELECT c.tenant_id, c.run_id,
               jsonb_agg(jsonb_build_object('kind', 'job.succeeded', 'step_id', c.step_id,
                                            'job_id', c.job_id, 'attempt', c.attempt,
                                            'actor', c.worker, 'data', '{}'::jsonb)
                         ORDER BY c.job_id) AS events
          FROM unnest(v_done) c
         GROUP BY c.tenant_id, c.run_id
         ORDER BY c.tenant_id, c.run_id
    LOOP
        PERFORM warden.append_events(r.tenant_id, r.run_id, r.events);
    END LOOP;

    UPDATE warden.steps s
       SET status = 'succeeded', output = c.result, error = NULL, finished_at = warden.now()
      FROM unnest(v_done) c
     WHERE s.tenant_id = c.tenant_id AND s.run_id = c.run_id AND s.step_id = c.step_id
       AND s.status = 'running' AND c.item_index IS NULL;
    -- a for_each item's job ends its item; the scheduler then decides the step's outcome
    -- (engine/scheduling/fanout.py), which needs every item
    UPDATE warden.step_items s
       SET status = 'succeeded', output = c.result, error = NULL, finished_at = warden.now(),
           retry_at = NULL
      FROM unnest(v_done) c
     WHERE s.tenant_id = c.tenant_id AND s.run_id = c.run_id AND s.step_id = c.step_id
       AND s.item_index = c.item_index AND s.status = 'running';

    -- wake_run, set-based: each run's flag once, one NOTIFY for the batch
    UPDATE warden.runs u SET needs_scheduling = true
      FROM (SELECT DISTINCT c.tenant_id, c.run_id FROM unnest(v_done) c) c
     WHERE u.tenant_id = c.tenant_id AND u.run_id = c.run_id AND NOT u.needs_scheduling;
    IF cardinality(v_done) > 0 THEN
        PERFORM pg_notify('warden_scheduler', '');
    END IF;

    -- the job row is looked up again (by index, one per job) only for the fenced ones
    RETURN QUERY
        SELECT i.job_id,
               CASE WHEN c.job_id IS NOT NULL THEN 'completed'
                    ELSE warden.fence_outcome(i.job_id) END
          FROM unnest(complete_jobs.job_ids) AS i(job_id)
          LEFT JOIN unnest(v_done) c ON c.job_id = i.job_id;
END $$;

-- A worker that stops gives its job back: the attempt ends (fenced by the lease token
-- like every worker write) and the next one is scheduled at once. A release is the
-- worker's decision, not the job's failure: the step's max_attempts grows by one so the
-- released attempt is not counted against its retries.
CREATE OR REPLACE FUNCTION warden.release_job(job_id text, lease_token uuid, reason text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j     warden.jobs;
    v_err jsonb;
BEGIN
    v_err := jsonb_build_object('type', 'Released', 'message', release_job.reason);
    UPDATE warden.jobs t
       SET status = 'failed', error = v_err, finished_at = warden.now()
     WHERE t.job_id = release_job.job_id AND warden.lease_held(t, release_job.lease_token)
    RETURNING t.* INTO j;
    IF NOT FOUND THEN
        PERFORM warden.raise_fenced(release_job.job_id);
    END IF;
    PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.failed', j.step_id, j.job_id,
        j.attempt, j.worker, jsonb_build_object('error', v_err, 'released', true));
    IF j.item_index IS NOT NULL THEN  -- a for_each item: the item's count, not the step's
        UPDATE warden.step_items SET max_attempts = max_attempts + 1
         WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
           AND item_index = j.item_index AND status = 'running';
        PERFORM warden.end_attempt(j, 'failed', v_err, true);
        UPDATE warden.step_items SET retry_at = warden.now()
         WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
           AND item_index = j.item_index AND retry_at IS NOT NULL;
        RETURN;
    END IF;
    UPDATE warden.steps SET max_attempts = max_attempts + 1
     WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
       AND status = 'running';
    PERFORM warden.end_attempt(j, 'failed', v_err, true);
    UPDATE warden.steps SET retry_at = warden.now()
     WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
       AND retry_at IS NOT NULL;
END $$;

ALTER TABLE warden.approvals DROP CONSTRAINT approvals_job_of_own_step;
ALTER TABLE warden.approvals ADD CONSTRAINT approvals_job_of_own_step CHECK (
    job_id IS NULL OR starts_with(job_id, run_id::text || ':' || step_id || '@')
    OR starts_with(job_id, run_id::text || ':' || step_id || '['));
DROP INDEX warden.approvals_one_pending_per_step;
CREATE UNIQUE INDEX approvals_one_pending_per_step ON warden.approvals
    (tenant_id, run_id, step_id, coalesce(substring(job_id FROM '\[([0-9]+)\]@'), ''))
    WHERE status = 'pending';

REVOKE ALL ON warden.step_items FROM PUBLIC;
GRANT SELECT, INSERT ON warden.step_items TO warden_engine;
GRANT UPDATE (status, attempts, max_attempts, retry_at, output, error, started_at,
              finished_at) ON warden.step_items TO warden_engine;
GRANT SELECT ON warden.step_items TO warden_auditor;
ALTER TABLE warden.step_items ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_scope ON warden.step_items TO warden_engine
    USING (warden.in_scope(tenant_id)) WITH CHECK (warden.in_scope(tenant_id));
CREATE POLICY audit_reads ON warden.step_items FOR SELECT TO warden_auditor USING (true);
-- retention also removes an archived run's for_each items
-- Drops one month's partitions of the timeline and of policy_decisions after `warden
-- retention` exported and verified their runs (docs/dba.md, "Partitions and retention"),
-- and removes those runs' mutable rows, in one transaction; returns the runs archived.
-- p_runs: the exported runs' heads, [{tenant_id, run_id, seq, hash}]; p_archive and
-- p_sha256: the archive file's name and digest, kept in warden.archived_runs.
--
-- Not SECURITY DEFINER and granted to no one: only the schema owner (a login that is a
-- member of warden_owner) may detach and drop a partition, so no engine, worker or
-- auditor session can get here. No row of an append-only table is deleted and no
-- trigger is disabled: the partitions go whole. Both parents are locked first (ACCESS
-- EXCLUSIVE, as DETACH takes anyway; appends wait for the rest of this transaction, and
-- lock_timeout gives up rather than queue behind a long transaction), so the checks below
-- see every run of the month as it will be dropped: exactly the runs exported, each
-- finished before the cutoff with the head exported, none still needed by an open rerun or
-- an undelivered notification. The mutable rows go by set-based DELETEs keyed by those
-- runs (index lookups), children first: notifications, approvals, jobs, for_each items,
-- steps, runs. A child run whose parent is in a later month is refused by runs_parent (the
-- month waits for its parent's; docs/dba.md).
CREATE OR REPLACE FUNCTION warden.retention_drop(
    p_month timestamptz, p_cutoff timestamptz, p_runs jsonb, p_archive text, p_sha256 text,
    p_by text
) RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
SET lock_timeout = '10s' AS $$
DECLARE
    v_from   timestamptz := date_trunc('month', p_month AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    v_to     timestamptz := (date_trunc('month', p_month AT TIME ZONE 'UTC')
                             + interval '1 month') AT TIME ZONE 'UTC';
    v_suffix text := to_char(p_month AT TIME ZONE 'UTC', '"y"YYYY"m"MM');
    v_bad    record;
    v_table  text;
    v_count  integer;
BEGIN
    IF p_cutoff > warden.now() - interval '1 day' THEN
        RAISE EXCEPTION 'the cutoff % is less than a day old', p_cutoff USING ERRCODE = 'WD422';
    END IF;
    IF v_to > p_cutoff THEN
        RAISE EXCEPTION 'partition % ends after the cutoff %', v_suffix, p_cutoff
            USING ERRCODE = 'WD422';
    END IF;
    IF to_regclass('warden_partitions.timeline_' || v_suffix) IS NULL THEN
        RAISE EXCEPTION 'no partition %', v_suffix USING ERRCODE = 'WD404';
    END IF;
    LOCK TABLE warden.timeline, warden.policy_decisions IN ACCESS EXCLUSIVE MODE;
    PERFORM 1 FROM warden.runs r WHERE r.created_at >= v_from AND r.created_at < v_to
        FOR UPDATE;
    WITH RECURSIVE held (tenant_id, run_id) AS (
        SELECT r.tenant_id, r.rerun_of FROM warden.runs r
         WHERE r.finished_at IS NULL AND r.rerun_of IS NOT NULL
        UNION
        SELECT r.tenant_id, r.rerun_of
          FROM held h JOIN warden.runs r ON r.tenant_id = h.tenant_id AND r.run_id = h.run_id
         WHERE r.rerun_of IS NOT NULL
    ), month_runs AS (
        SELECT * FROM warden.runs r WHERE r.created_at >= v_from AND r.created_at < v_to
    )
    SELECT coalesce(r.tenant_id, x.tenant_id) AS tenant_id,
           coalesce(r.run_id, x.run_id) AS run_id,
           CASE WHEN r.run_id IS NULL THEN 'exported, but not a run of this partition'
                WHEN x.run_id IS NULL THEN 'a run of this partition the export lacks'
                WHEN r.finished_at IS NULL OR r.finished_at >= p_cutoff
                    THEN 'not finished before the cutoff'
                WHEN r.timeline_seq <> x.seq OR r.timeline_hash <> x.hash
                    THEN 'its timeline moved on since the export'
                WHEN EXISTS (SELECT 1 FROM held h
                              WHERE h.tenant_id = r.tenant_id AND h.run_id = r.run_id)
                    THEN 'an open rerun reaches it'
                WHEN EXISTS (SELECT 1 FROM warden.notifications n
                              WHERE n.tenant_id = r.tenant_id AND n.run_id = r.run_id
                                AND n.status IN ('pending', 'delivering'))
                    THEN 'a notification is still being delivered'
           END AS problem
      INTO v_bad
      FROM month_runs r
      FULL JOIN jsonb_to_recordset(p_runs) AS x(tenant_id text, run_id uuid, seq bigint,
                                                hash text)
        ON x.tenant_id = r.tenant_id AND x.run_id = r.run_id
     WHERE r.run_id IS NULL OR x.run_id IS NULL OR r.finished_at IS NULL
        OR r.finished_at >= p_cutoff OR r.timeline_seq <> x.seq OR r.timeline_hash <> x.hash
        OR EXISTS (SELECT 1 FROM held h WHERE h.tenant_id = r.tenant_id AND h.run_id = r.run_id)
        OR EXISTS (SELECT 1 FROM warden.notifications n
                    WHERE n.tenant_id = r.tenant_id AND n.run_id = r.run_id
                      AND n.status IN ('pending', 'delivering'))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'run % (%): %; partition % kept', v_bad.run_id, v_bad.tenant_id,
            v_bad.problem, v_suffix USING ERRCODE = 'WD409';
    END IF;

    INSERT INTO warden.archived_runs (tenant_id, run_id, workflow_id, status, created_by,
                                      rerun_of, created_at, finished_at, timeline_seq,
                                      timeline_hash, archive, archive_sha256, archived_by)
    SELECT r.tenant_id, r.run_id, r.workflow_id, r.status, r.created_by, r.rerun_of,
           r.created_at, r.finished_at, r.timeline_seq, r.timeline_hash, p_archive, p_sha256,
           p_by
      FROM warden.runs r WHERE r.created_at >= v_from AND r.created_at < v_to;
    GET DIAGNOSTICS v_count = ROW_COUNT;

    FOREACH v_table IN ARRAY ARRAY['timeline', 'policy_decisions'] LOOP
        EXECUTE format('ALTER TABLE warden.%I DETACH PARTITION warden_partitions.%I',
                       v_table, v_table || '_' || v_suffix);
        EXECUTE format('DROP TABLE warden_partitions.%I', v_table || '_' || v_suffix);
    END LOOP;

    DELETE FROM warden.notifications n
     USING jsonb_to_recordset(p_runs) AS x(tenant_id text, run_id uuid)
     WHERE n.tenant_id = x.tenant_id AND n.run_id = x.run_id;
    DELETE FROM warden.approvals a
     USING jsonb_to_recordset(p_runs) AS x(tenant_id text, run_id uuid)
     WHERE a.tenant_id = x.tenant_id AND a.run_id = x.run_id;
    DELETE FROM warden.jobs j
     USING jsonb_to_recordset(p_runs) AS x(tenant_id text, run_id uuid)
     WHERE j.tenant_id = x.tenant_id AND j.run_id = x.run_id;
    DELETE FROM warden.step_items i
     USING jsonb_to_recordset(p_runs) AS x(tenant_id text, run_id uuid)
     WHERE i.tenant_id = x.tenant_id AND i.run_id = x.run_id;
    DELETE FROM warden.steps s
     USING jsonb_to_recordset(p_runs) AS x(tenant_id text, run_id uuid)
     WHERE s.tenant_id = x.tenant_id AND s.run_id = x.run_id;
    DELETE FROM warden.runs r
     USING jsonb_to_recordset(p_runs) AS x(tenant_id text, run_id uuid)
     WHERE r.tenant_id = x.tenant_id AND r.run_id = x.run_id;
    RETURN v_count;
END $$;
REVOKE EXECUTE ON FUNCTION warden.retention_drop(timestamptz, timestamptz, jsonb, text, text,
                                                 text) FROM PUBLIC;

RESET ROLE;
"""

DOWNGRADE = r"""
SET LOCAL ROLE warden_owner;
SET LOCAL check_function_bodies = off;
-- After an attempt ended without success: schedule the next attempt if the step has one
-- left and the error is retryable, else end the step with p_step_status. Internal to the
-- job protocol (fail_job, release_job, reap_expired_jobs).
CREATE OR REPLACE FUNCTION warden.end_attempt(
    j warden.jobs, p_step_status warden.step_status, p_error jsonb, p_retryable boolean
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s       warden.steps;
    v_delay double precision;
BEGIN
    -- lock order: the run before its steps (callers normally hold it already)
    PERFORM 1 FROM warden.runs WHERE tenant_id = j.tenant_id AND run_id = j.run_id
        FOR NO KEY UPDATE;
    SELECT * INTO s FROM warden.steps
     WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
       FOR NO KEY UPDATE;
    IF s.status <> 'running' THEN
        RETURN;  -- the run was cancelled or the step already ended: nothing to schedule
    END IF;
    IF p_retryable AND j.attempt < s.max_attempts THEN
        -- backoff_ms * multiplier^(n-1), capped; jitter only ever adds, so no retry comes
        -- earlier than the configured backoff
        v_delay := least(s.backoff_ms * power(s.multiplier, j.attempt - 1), s.max_backoff_ms);
        v_delay := v_delay * (1 + s.jitter * random());
        UPDATE warden.steps
           SET retry_at = warden.now() + make_interval(secs => v_delay / 1000.0),
               error = p_error
         WHERE tenant_id = s.tenant_id AND run_id = s.run_id AND step_id = s.step_id;
        PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.retry_scheduled', j.step_id,
            j.job_id, j.attempt, NULL, jsonb_build_object(
                'next_attempt', j.attempt + 1, 'delay_ms', round(v_delay),
                'retry_at', warden.now() + make_interval(secs => v_delay / 1000.0)));
    ELSE
        UPDATE warden.steps SET status = p_step_status, error = p_error,
                                finished_at = warden.now(), retry_at = NULL
         WHERE tenant_id = s.tenant_id AND run_id = s.run_id AND step_id = s.step_id;
    END IF;
    PERFORM warden.wake_run(j.tenant_id, j.run_id);
END $$;

-- Completes a worker's batch of jobs in one statement (one commit for all of them: with
-- durability on, a commit per job capped a worker at a few hundred jobs/s). Each job is
-- fenced like every worker write (warden.lease_held), and gets an outcome row instead of
-- an error, so one stale lease does not throw the rest of the batch away: 'completed',
-- or why the write was fenced (warden.fence_outcome: 'lease_lost', 'cancelled',
-- 'not_found').
CREATE OR REPLACE FUNCTION warden.complete_jobs(
    job_ids text[], lease_tokens uuid[], results jsonb[])
RETURNS TABLE (job_id text, outcome text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_done warden.jobs[];
    r      record;
BEGIN
    IF cardinality(job_ids) IS DISTINCT FROM cardinality(lease_tokens)
       OR cardinality(job_ids) IS DISTINCT FROM cardinality(results) THEN
        RAISE EXCEPTION 'job_ids, lease_tokens and results must have the same length'
            USING ERRCODE = '22023';
    END IF;
    -- Lock order jobs -> runs -> steps. The jobs are locked by this UPDATE (each has one
    -- lease holder, so two completers never contend for a job); the runs are then locked
    -- in (tenant, run) order by append_events, as claim_jobs and the reaper do. The
    -- completed rows are kept in a variable, not a temporary table: a temp table per
    -- call would churn the system catalogs on the hottest path there is.
    WITH input AS (
        SELECT * FROM unnest(complete_jobs.job_ids, complete_jobs.lease_tokens,
                             complete_jobs.results) AS u(job_id, lease_token, result)
    ), done AS (
        -- job_id = ANY(...) lets jobs_by_job_id find the rows whatever the planner makes
        -- of the join (it chose a hash join over a scan of all of warden.jobs per batch)
        UPDATE warden.jobs t
           SET status = 'succeeded', result = i.result, finished_at = warden.now()
          FROM input i
         WHERE t.job_id = ANY (complete_jobs.job_ids) AND t.job_id = i.job_id
           AND warden.lease_held(t, i.lease_token)
        RETURNING t AS j
    )
    SELECT coalesce(array_agg(d.j ORDER BY (d.j).tenant_id, (d.j).run_id, (d.j).job_id), '{}')
      INTO v_done FROM done d;

    FOR r IN
        SELECT c.tenant_id, c.run_id,
               jsonb_agg(jsonb_build_object('kind', 'job.succeeded', 'step_id', c.step_id,
                                            'job_id', c.job_id, 'attempt', c.attempt,
                                            'actor', c.worker, 'data', '{}'::jsonb)
                         ORDER BY c.job_id) AS events
          FROM unnest(v_done) c
         GROUP BY c.tenant_id, c.run_id
         ORDER BY c.tenant_id, c.run_id
    LOOP
        PERFORM warden.append_events(r.tenant_id, r.run_id, r.events);
    END LOOP;

    UPDATE warden.steps s
       SET status = 'succeeded', output = c.result, error = NULL, finished_at = warden.now()
      FROM unnest(v_done) c
     WHERE s.tenant_id = c.tenant_id AND s.run_id = c.run_id AND s.step_id = c.step_id
       AND s.status = 'running';

    -- wake_run, set-based: each run's flag once, one NOTIFY for the batch
    UPDATE warden.runs u SET needs_scheduling = true
      FROM (SELECT DISTINCT c.tenant_id, c.run_id FROM unnest(v_done) c) c
     WHERE u.tenant_id = c.tenant_id AND u.run_id = c.run_id AND NOT u.needs_scheduling;
    IF cardinality(v_done) > 0 THEN
        PERFORM pg_notify('warden_scheduler', '');
    END IF;

    -- the job row is looked up again (by index, one per job) only for the fenced ones
    RETURN QUERY
        SELECT i.job_id,
               CASE WHEN c.job_id IS NOT NULL THEN 'completed'
                    ELSE warden.fence_outcome(i.job_id) END
          FROM unnest(complete_jobs.job_ids) AS i(job_id)
          LEFT JOIN unnest(v_done) c ON c.job_id = i.job_id;
END $$;

-- A worker that stops gives its job back: the attempt ends (fenced by the lease token
-- like every worker write) and the next one is scheduled at once. A release is the
-- worker's decision, not the job's failure: the step's max_attempts grows by one so the
-- released attempt is not counted against its retries.
CREATE OR REPLACE FUNCTION warden.release_job(job_id text, lease_token uuid, reason text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j     warden.jobs;
    v_err jsonb;
BEGIN
    v_err := jsonb_build_object('type', 'Released', 'message', release_job.reason);
    UPDATE warden.jobs t
       SET status = 'failed', error = v_err, finished_at = warden.now()
     WHERE t.job_id = release_job.job_id AND warden.lease_held(t, release_job.lease_token)
    RETURNING t.* INTO j;
    IF NOT FOUND THEN
        PERFORM warden.raise_fenced(release_job.job_id);
    END IF;
    PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.failed', j.step_id, j.job_id,
        j.attempt, j.worker, jsonb_build_object('error', v_err, 'released', true));
    UPDATE warden.steps SET max_attempts = max_attempts + 1
     WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
       AND status = 'running';
    PERFORM warden.end_attempt(j, 'failed', v_err, true);
    UPDATE warden.steps SET retry_at = warden.now()
     WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
       AND retry_at IS NOT NULL;
END $$;

DROP INDEX warden.approvals_one_pending_per_step;
CREATE UNIQUE INDEX approvals_one_pending_per_step ON warden.approvals (tenant_id, run_id, step_id)
    WHERE status = 'pending';
ALTER TABLE warden.approvals DROP CONSTRAINT approvals_job_of_own_step;
ALTER TABLE warden.approvals ADD CONSTRAINT approvals_job_of_own_step CHECK (
    job_id IS NULL OR starts_with(job_id, run_id::text || ':' || step_id || '@'));
DELETE FROM warden.approvals WHERE job_id LIKE '%]@%';
ALTER TABLE warden.jobs DROP CONSTRAINT jobs_id_format;
ALTER TABLE warden.jobs DROP CONSTRAINT jobs_of_item;
ALTER TABLE warden.jobs DROP CONSTRAINT jobs_one_row_per_attempt;
DELETE FROM warden.jobs WHERE item_index IS NOT NULL;
ALTER TABLE warden.jobs DROP COLUMN item_index;
ALTER TABLE warden.jobs ADD CONSTRAINT jobs_one_row_per_attempt
    UNIQUE (tenant_id, run_id, step_id, attempt);
ALTER TABLE warden.jobs ADD CONSTRAINT jobs_id_format
    CHECK (job_id = run_id::text || ':' || step_id || '@' || attempt);
DROP TABLE warden.step_items;
DROP INDEX warden.runs_one_child_per_attempt;
ALTER TABLE warden.runs
    DROP CONSTRAINT runs_parent_complete,
    DROP CONSTRAINT runs_parent,
    DROP COLUMN depth,
    DROP COLUMN pins,
    DROP COLUMN parent_attempt,
    DROP COLUMN parent_item_index,
    DROP COLUMN parent_step_id,
    DROP COLUMN parent_run_id;
-- retention as 0007 wrote it
-- Drops one month's partitions of the timeline and of policy_decisions after `warden
-- retention` exported and verified their runs (docs/dba.md, "Partitions and retention"),
-- and removes those runs' mutable rows, in one transaction; returns the runs archived.
-- p_runs: the exported runs' heads, [{tenant_id, run_id, seq, hash}]; p_archive and
-- p_sha256: the archive file's name and digest, kept in warden.archived_runs.
--
-- Not SECURITY DEFINER and granted to no one: only the schema owner (a login that is a
-- member of warden_owner) may detach and drop a partition, so no engine, worker or
-- auditor session can get here. No row of an append-only table is deleted and no
-- trigger is disabled: the partitions go whole. Both parents are locked first (ACCESS
-- EXCLUSIVE, as DETACH takes anyway; appends wait for the rest of this transaction, and
-- lock_timeout gives up rather than queue behind a long transaction), so the checks below
-- see every run of the month as it will be dropped: exactly the runs exported, each
-- finished before the cutoff with the head exported, none still needed by an open rerun or
-- an undelivered notification. The mutable rows go by set-based DELETEs keyed by those
-- runs (index lookups), children first: notifications, approvals, jobs, steps, runs.
CREATE OR REPLACE FUNCTION warden.retention_drop(
    p_month timestamptz, p_cutoff timestamptz, p_runs jsonb, p_archive text, p_sha256 text,
    p_by text
) RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
SET lock_timeout = '10s' AS $$
DECLARE
    v_from   timestamptz := date_trunc('month', p_month AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    v_to     timestamptz := (date_trunc('month', p_month AT TIME ZONE 'UTC')
                             + interval '1 month') AT TIME ZONE 'UTC';
    v_suffix text := to_char(p_month AT TIME ZONE 'UTC', '"y"YYYY"m"MM');
    v_bad    record;
    v_table  text;
    v_count  integer;
BEGIN
    IF p_cutoff > warden.now() - interval '1 day' THEN
        RAISE EXCEPTION 'the cutoff % is less than a day old', p_cutoff USING ERRCODE = 'WD422';
    END IF;
    IF v_to > p_cutoff THEN
        RAISE EXCEPTION 'partition % ends after the cutoff %', v_suffix, p_cutoff
            USING ERRCODE = 'WD422';
    END IF;
    IF to_regclass('warden_partitions.timeline_' || v_suffix) IS NULL THEN
        RAISE EXCEPTION 'no partition %', v_suffix USING ERRCODE = 'WD404';
    END IF;
    LOCK TABLE warden.timeline, warden.policy_decisions IN ACCESS EXCLUSIVE MODE;
    PERFORM 1 FROM warden.runs r WHERE r.created_at >= v_from AND r.created_at < v_to
        FOR UPDATE;
    WITH RECURSIVE held (tenant_id, run_id) AS (
        SELECT r.tenant_id, r.rerun_of FROM warden.runs r
         WHERE r.finished_at IS NULL AND r.rerun_of IS NOT NULL
        UNION
        SELECT r.tenant_id, r.rerun_of
          FROM held h JOIN warden.runs r ON r.tenant_id = h.tenant_id AND r.run_id = h.run_id
         WHERE r.rerun_of IS NOT NULL
    ), month_runs AS (
        SELECT * FROM warden.runs r WHERE r.created_at >= v_from AND r.created_at < v_to
    )
    SELECT coalesce(r.tenant_id, x.tenant_id) AS tenant_id,
           coalesce(r.run_id, x.run_id) AS run_id,
           CASE WHEN r.run_id IS NULL THEN 'exported, but not a run of this partition'
                WHEN x.run_id IS NULL THEN 'a run of this partition the export lacks'
                WHEN r.finished_at IS NULL OR r.finished_at >= p_cutoff
                    THEN 'not finished before the cutoff'
                WHEN r.timeline_seq <> x.seq OR r.timeline_hash <> x.hash
                    THEN 'its timeline moved on since the export'
                WHEN EXISTS (SELECT 1 FROM held h
                              WHERE h.tenant_id = r.tenant_id AND h.run_id = r.run_id)
                    THEN 'an open rerun reaches it'
                WHEN EXISTS (SELECT 1 FROM warden.notifications n
                              WHERE n.tenant_id = r.tenant_id AND n.run_id = r.run_id
                                AND n.status IN ('pending', 'delivering'))
                    THEN 'a notification is still being delivered'
           END AS problem
      INTO v_bad
      FROM month_runs r
      FULL JOIN jsonb_to_recordset(p_runs) AS x(tenant_id text, run_id uuid, seq bigint,
                                                hash text)
        ON x.tenant_id = r.tenant_id AND x.run_id = r.run_id
     WHERE r.run_id IS NULL OR x.run_id IS NULL OR r.finished_at IS NULL
        OR r.finished_at >= p_cutoff OR r.timeline_seq <> x.seq OR r.timeline_hash <> x.hash
        OR EXISTS (SELECT 1 FROM held h WHERE h.tenant_id = r.tenant_id AND h.run_id = r.run_id)
        OR EXISTS (SELECT 1 FROM warden.notifications n
                    WHERE n.tenant_id = r.tenant_id AND n.run_id = r.run_id
                      AND n.status IN ('pending', 'delivering'))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'run % (%): %; partition % kept', v_bad.run_id, v_bad.tenant_id,
            v_bad.problem, v_suffix USING ERRCODE = 'WD409';
    END IF;

    INSERT INTO warden.archived_runs (tenant_id, run_id, workflow_id, status, created_by,
                                      rerun_of, created_at, finished_at, timeline_seq,
                                      timeline_hash, archive, archive_sha256, archived_by)
    SELECT r.tenant_id, r.run_id, r.workflow_id, r.status, r.created_by, r.rerun_of,
           r.created_at, r.finished_at, r.timeline_seq, r.timeline_hash, p_archive, p_sha256,
           p_by
      FROM warden.runs r WHERE r.created_at >= v_from AND r.created_at < v_to;
    GET DIAGNOSTICS v_count = ROW_COUNT;

    FOREACH v_table IN ARRAY ARRAY['timeline', 'policy_decisions'] LOOP
        EXECUTE format('ALTER TABLE warden.%I DETACH PARTITION warden_partitions.%I',
                       v_table, v_table || '_' || v_suffix);
        EXECUTE format('DROP TABLE warden_partitions.%I', v_table || '_' || v_suffix);
    END LOOP;

    DELETE FROM warden.notifications n
     USING jsonb_to_recordset(p_runs) AS x(tenant_id text, run_id uuid)
     WHERE n.tenant_id = x.tenant_id AND n.run_id = x.run_id;
    DELETE FROM warden.approvals a
     USING jsonb_to_recordset(p_runs) AS x(tenant_id text, run_id uuid)
     WHERE a.tenant_id = x.tenant_id AND a.run_id = x.run_id;
    DELETE FROM warden.jobs j
     USING jsonb_to_recordset(p_runs) AS x(tenant_id text, run_id uuid)
     WHERE j.tenant_id = x.tenant_id AND j.run_id = x.run_id;
    DELETE FROM warden.steps s
     USING jsonb_to_recordset(p_runs) AS x(tenant_id text, run_id uuid)
     WHERE s.tenant_id = x.tenant_id AND s.run_id = x.run_id;
    DELETE FROM warden.runs r
     USING jsonb_to_recordset(p_runs) AS x(tenant_id text, run_id uuid)
     WHERE r.tenant_id = x.tenant_id AND r.run_id = x.run_id;
    RETURN v_count;
END $$;
REVOKE EXECUTE ON FUNCTION warden.retention_drop(timestamptz, timestamptz, jsonb, text, text,
                                                 text) FROM PUBLIC;

RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
