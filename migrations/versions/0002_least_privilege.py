"""Least privilege: four group roles, SECURITY DEFINER worker functions, worker grants,
row-level security on every tenant table.

Revision ID: 0002_least_privilege
Revises: 0001_baseline
Create Date: 2026-12-06

Frozen. The functions were SECURITY INVOKER, so a SQL worker needed table privileges that
let it claim any tenant's jobs, read any tenant's inputs and forge an approval. Now a
worker role holds EXECUTE on the job protocol and nothing else, the protocol checks the
login role's grants (warden.worker_grants), the engine role owns nothing and may only
append to the audit records, and row-level security fences tenants behind the API's own
checks (docs/security.md). The roles are the cluster's: a downgrade leaves them.
"""

from alembic import op

revision = "0002_least_privilege"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL check_function_bodies = off;
-- Which login roles may work on which tenants and topics (docs/security.md). claim_jobs
-- hands a role only the jobs its grants cover, and every other worker write is fenced by
-- them too (warden.lease_held): a worker never receives, heartbeats, completes or fails a
-- job of a tenant or topic it is not granted. A role with no grant claims nothing.
-- tenant_id '*' is every tenant; in topic_glob '*' matches any run of characters and '?'
-- one. Written by `warden workers grant|revoke` (or these rows directly) as the owner.
CREATE TABLE warden.worker_grants (
    role_name   text        NOT NULL CHECK (role_name ~ '^[A-Za-z_][A-Za-z0-9_$.@-]{0,62}$'),
    tenant_id   text        NOT NULL CHECK (length(tenant_id) BETWEEN 1 AND 255),
    topic_glob  text        NOT NULL CHECK (topic_glob ~ '^[A-Za-z0-9._*?-]{1,255}$'),
    -- topic_glob as the LIKE pattern the claim compares with ('_' is literal in a topic)
    topic_like  text        GENERATED ALWAYS AS (
        replace(replace(replace(topic_glob, '_', '\_'), '*', '%'), '?', '_')) STORED,
    granted_by  text        NOT NULL,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role_name, tenant_id, topic_glob)
);

-- Whether the session's login role may work on a job of this tenant and topic
-- (warden.worker_grants). session_user, not current_user: inside the SECURITY DEFINER
-- worker functions current_user is the owner, session_user is who logged in.
CREATE OR REPLACE FUNCTION warden.granted(p_tenant text, p_topic text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT EXISTS (SELECT 1 FROM warden.worker_grants g
                    WHERE g.role_name = session_user::text
                      AND (g.tenant_id = '*' OR g.tenant_id = p_tenant)
                      AND p_topic LIKE g.topic_like)
$$;

-- Row-level security's tenant fence (sql/grants/30_row_security.sql): a row is visible to
-- an engine session when its tenant is the one the session's transaction carries in
-- warden.tenant — set per API request, or '*' by the loops that act across tenants by
-- design (engine/store/scope.py). Unset or empty: no row.
CREATE OR REPLACE FUNCTION warden.in_scope(p_tenant text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT p_tenant = current_setting('warden.tenant', true)
        OR current_setting('warden.tenant', true) = '*'
$$;

-- Raises the typed error of a fenced single-job write, one SQLSTATE per outcome of
-- warden.fence_outcome: WD001 lease_lost, WD002 cancelled, WD003 not_found (no such job,
-- or not the caller's to touch). engine/store/connection.py maps each to LeaseLost
-- carrying the same outcome complete_jobs would have returned.
CREATE OR REPLACE FUNCTION warden.raise_fenced(p_job_id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_outcome text := warden.fence_outcome(p_job_id);
BEGIN
    IF v_outcome = 'not_found' THEN
        RAISE EXCEPTION 'job % not found', p_job_id USING ERRCODE = 'WD003';
    ELSIF v_outcome = 'cancelled' THEN
        RAISE EXCEPTION 'job % was cancelled', p_job_id USING ERRCODE = 'WD002';
    END IF;
    RAISE EXCEPTION 'lease on job % lost', p_job_id USING ERRCODE = 'WD001';
END $$;

-- THE fence: a worker's write to a job lands only while the worker still holds the job's
-- lease — the job is running, the token is the one this claim handed out, and the lease
-- has not expired, whether or not the reaper has seen it yet — and while its login role
-- is still granted the job's tenant and topic (warden.granted). Every worker write
-- (heartbeat_job, complete_job(s), fail_job, release_job) filters on this and nothing
-- else. A SQL function so the planner inlines it into each UPDATE's WHERE clause: the
-- job is still found by its index (jobs_by_job_id), the fence is evaluated on that row.
CREATE OR REPLACE FUNCTION warden.lease_held(j warden.jobs, presented uuid) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT j.status = 'running' AND j.lease_token = presented
       AND j.lease_expires_at > warden.now() AND warden.granted(j.tenant_id, j.topic)
$$;

-- Why a fenced write to p_job_id matched no row, in the one vocabulary every path uses:
-- 'cancelled' (its run was cancelled: stop working on it), 'not_found' (no such job), or
-- 'lease_lost' (expired, reaped, re-claimed, or already finished). A job of a tenant or
-- topic the caller is not granted is 'not_found': its existence is not the caller's to
-- learn. complete_jobs returns these as outcomes; the single-job functions raise them
-- (raise_fenced).
CREATE OR REPLACE FUNCTION warden.fence_outcome(p_job_id text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT CASE WHEN j.status = 'cancelled' THEN 'cancelled'
                                 ELSE 'lease_lost' END
                       FROM warden.jobs j WHERE j.job_id = p_job_id
                        AND warden.granted(j.tenant_id, j.topic)), 'not_found')
$$;

-- Extends a held lease (never past the attempt's deadline, timeout_ms after its start)
-- and stores the checkpoint if one is given; returns the new expiry. Fenced
-- (warden.lease_held): raises WD001 / WD002 / WD404 once the lease is gone, which is how a
-- worker learns that its run was cancelled.
CREATE OR REPLACE FUNCTION warden.heartbeat_job(
    job_id text, lease_token uuid, extend interval, checkpoint jsonb DEFAULT NULL
) RETURNS timestamptz
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j warden.jobs;
BEGIN
    UPDATE warden.jobs t
       SET lease_expires_at = least(warden.now() + extend, coalesce(t.deadline_at, 'infinity')),
           checkpoint = coalesce(heartbeat_job.checkpoint, t.checkpoint)
     WHERE t.job_id = heartbeat_job.job_id
       AND warden.lease_held(t, heartbeat_job.lease_token)
    RETURNING t.* INTO j;
    IF NOT FOUND THEN
        PERFORM warden.raise_fenced(heartbeat_job.job_id);
    END IF;
    IF heartbeat_job.checkpoint IS NOT NULL THEN
        PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.checkpointed', j.step_id,
            j.job_id, j.attempt, j.worker, jsonb_build_object(
                'bytes', octet_length(heartbeat_job.checkpoint::text),
                'sha256', encode(sha256(convert_to(heartbeat_job.checkpoint::text, 'UTF8')),
                                 'hex')));
    END IF;
    RETURN j.lease_expires_at;
END $$;

-- Completes one job under its lease token: complete_jobs with a batch of one, raising
-- the fenced outcome as its typed error (raise_fenced) instead of returning it.
CREATE OR REPLACE FUNCTION warden.complete_job(job_id text, lease_token uuid, result jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF (SELECT c.outcome FROM warden.complete_jobs(ARRAY[complete_job.job_id],
            ARRAY[complete_job.lease_token], ARRAY[complete_job.result]) c) <> 'completed' THEN
        PERFORM warden.raise_fenced(complete_job.job_id);
    END IF;
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

-- Fails one job under its lease token (fenced: warden.lease_held) and schedules the
-- step's next attempt when one is left and the error is retryable (end_attempt).
CREATE OR REPLACE FUNCTION warden.fail_job(job_id text, lease_token uuid, error jsonb,
                                           retryable boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j warden.jobs;
BEGIN
    UPDATE warden.jobs t
       SET status = 'failed', error = fail_job.error, finished_at = warden.now()
     WHERE t.job_id = fail_job.job_id AND warden.lease_held(t, fail_job.lease_token)
    RETURNING t.* INTO j;
    IF NOT FOUND THEN
        PERFORM warden.raise_fenced(fail_job.job_id);
    END IF;
    PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.failed', j.step_id, j.job_id,
        j.attempt, j.worker, jsonb_build_object('error', fail_job.error,
                                                'retryable', fail_job.retryable));
    PERFORM warden.end_attempt(j, 'failed', fail_job.error, fail_job.retryable);
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

-- Ends attempts whose lease expired as timed_out and schedules their retries; returns
-- the number reaped. The complement of warden.lease_held: a job it reaps is one no
-- worker write can land on any more. SKIP LOCKED lets any number of reapers run side by
-- side, and skips a job whose worker is writing to it right now.
CREATE OR REPLACE FUNCTION warden.reap_expired_jobs(p_limit integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j     warden.jobs;
    v_n   integer := 0;
    v_now timestamptz := warden.now();
BEGIN
    FOR j IN
        WITH expired AS (
            -- jobs_running_lease serves this scan in expiry order
            SELECT t.tenant_id, t.job_id FROM warden.jobs t
             WHERE t.status = 'running' AND t.lease_expires_at <= v_now
             ORDER BY t.lease_expires_at
             LIMIT p_limit
               FOR UPDATE SKIP LOCKED
        ), reaped AS (
            UPDATE warden.jobs t
               SET status = 'timed_out', finished_at = v_now,
                   error = jsonb_build_object('type', 'LeaseExpired',
                       'message', 'lease expired at ' || t.lease_expires_at)
              FROM expired e
             WHERE t.tenant_id = e.tenant_id AND t.job_id = e.job_id
            RETURNING t.*
        )
        SELECT * FROM reaped r ORDER BY r.tenant_id, r.run_id, r.job_id  -- run lock order
    LOOP
        PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.timed_out', j.step_id, j.job_id,
                                    j.attempt, 'reaper', jsonb_build_object('error', j.error));
        PERFORM warden.end_attempt(j, 'timed_out', j.error, true);
        v_n := v_n + 1;
    END LOOP;
    RETURN v_n;
END $$;

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

-- claim_jobs returns two more columns (available_at, started_at): a new signature
DROP FUNCTION warden.claim_jobs(text[], text, integer, interval);
-- Claims up to max_jobs claimable jobs of the given topics for `worker`, leasing each
-- for `lease` (never past the attempt's timeout), and returns what the worker needs.
-- The job protocol's entry point for workers in any language (docs/sql-worker.md).
--
-- Claimable: pending, available_at reached, of a tenant and topic the login role is
-- granted (warden.worker_grants), and dispatched under the policy snapshot that is still
-- its tenant's active one (a drifted job is skipped here and re-evaluated by the
-- scheduler, which the activation woke).
--
-- SECURITY DEFINER, like every worker function: a worker role holds EXECUTE on these and
-- no table privilege at all (sql/grants/20_privileges.sql), so this body is the only way
-- its claims reach warden.jobs. The search_path is fixed and every name qualified, so a
-- caller's objects can never stand in for warden's. available_at and started_at say how
-- long the job waited for this claim.
CREATE OR REPLACE FUNCTION warden.claim_jobs(
    topics text[], worker text, max_jobs integer, lease interval
) RETURNS TABLE (
    job_id text, run_id uuid, step_id text, attempt integer, topic text, input jsonb,
    upstream jsonb, checkpoint jsonb, constraints jsonb, lease_token uuid,
    lease_expires_at timestamptz, tenant_id text, available_at timestamptz,
    started_at timestamptz
) LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    c            record;
    v_now        timestamptz := warden.now();
    v_run_status warden.run_status;
    v_tenant     text;
    v_run        uuid;
    v_events     jsonb;
BEGIN
    IF claim_jobs.max_jobs < 1 OR claim_jobs.lease <= interval '0' THEN
        RAISE EXCEPTION 'max_jobs must be >= 1 and lease > 0' USING ERRCODE = '22023';
    END IF;
    FOR c IN
        -- One ordered scan of jobs_claimable per topic: with topic = ANY(topics) the index
        -- cannot give the (priority, available_at) order, so every claim would read and
        -- sort every pending job of its topics. Equality on the leading column gives the
        -- order, and LIMIT stops each scan after max_jobs rows. SKIP LOCKED: concurrent
        -- claimers take disjoint rows instead of queueing behind each other. A worker of
        -- several topics may lock up to max_jobs rows per topic for the length of this
        -- statement; the ones the outer LIMIT drops are unlocked at its commit, claimable
        -- again at once.
        WITH picked AS (
            SELECT p.tenant_id, p.job_id
              FROM (SELECT DISTINCT u.topic FROM unnest(claim_jobs.topics) AS u(topic)) t
             CROSS JOIN LATERAL (
                   SELECT j.tenant_id, j.job_id, j.priority, j.available_at
                     FROM warden.jobs j
                    WHERE j.status = 'pending' AND j.topic = t.topic
                      AND j.available_at <= v_now
                      -- only what the login role is granted (warden.worker_grants)
                      AND warden.granted(j.tenant_id, j.topic)
                      -- one primary-key probe per candidate row
                      AND j.policy_snapshot_hash IS NOT DISTINCT FROM (
                          SELECT a.snapshot_hash FROM warden.policy_active a
                           WHERE a.tenant_id = j.tenant_id)
                    ORDER BY j.priority, j.available_at
                    LIMIT claim_jobs.max_jobs
                      FOR UPDATE OF j SKIP LOCKED) p
             ORDER BY p.priority, p.available_at
             LIMIT claim_jobs.max_jobs
        ), claimed AS (
            UPDATE warden.jobs j
               SET status = 'running', worker = claim_jobs.worker,
                   lease_token = gen_random_uuid(), started_at = v_now,
                   deadline_at = v_now + make_interval(secs => j.timeout_ms / 1000.0),
                   lease_expires_at = least(v_now + claim_jobs.lease,
                                            v_now + make_interval(secs => j.timeout_ms / 1000.0))
              FROM picked p
             WHERE j.tenant_id = p.tenant_id AND j.job_id = p.job_id
            RETURNING j.*
        )
        -- runs are locked in (tenant, run) order: two claimers holding disjoint jobs of
        -- the same runs then never wait on each other in a cycle
        SELECT * FROM claimed k ORDER BY k.tenant_id, k.run_id, k.job_id
    LOOP
        -- Each run is locked once per claim, and its events are appended in one call
        -- when the claim moves to the next run (not once per claimed job: a fan-out's
        -- workers and its scheduler would queue on the run row for each).
        IF v_run IS DISTINCT FROM c.run_id OR v_tenant IS DISTINCT FROM c.tenant_id THEN
            IF v_run IS NOT NULL THEN
                PERFORM warden.append_events(v_tenant, v_run, v_events);
            END IF;
            v_tenant := c.tenant_id;
            v_run := c.run_id;
            v_events := '[]';
            -- under the run's lock: a run cancelled (or otherwise ended) while this claim
            -- waited does not hand its job out; the job ends cancelled instead
            SELECT r.status INTO v_run_status FROM warden.runs r
             WHERE r.tenant_id = c.tenant_id AND r.run_id = c.run_id
               FOR NO KEY UPDATE;
        END IF;
        IF v_run_status IN ('succeeded', 'failed', 'denied', 'cancelled', 'timed_out') THEN
            UPDATE warden.jobs j SET status = 'cancelled', finished_at = v_now,
                   error = jsonb_build_object('type', 'RunEnded', 'run_status', v_run_status)
             WHERE j.tenant_id = c.tenant_id AND j.job_id = c.job_id;
            v_events := v_events || jsonb_build_array(jsonb_build_object(
                'kind', 'job.cancelled', 'step_id', c.step_id, 'job_id', c.job_id,
                'attempt', c.attempt, 'actor', claim_jobs.worker,
                'data', jsonb_build_object('reason', 'run ended before the claim completed')));
            CONTINUE;
        END IF;
        v_events := v_events || jsonb_build_array(jsonb_build_object(
            'kind', 'job.claimed', 'step_id', c.step_id, 'job_id', c.job_id,
            'attempt', c.attempt, 'actor', claim_jobs.worker,
            'data', jsonb_build_object('lease_expires_at', c.lease_expires_at)));
        job_id := c.job_id; run_id := c.run_id; step_id := c.step_id; attempt := c.attempt;
        topic := c.topic; input := c.input; upstream := c.upstream; checkpoint := c.checkpoint;
        constraints := c.constraints; lease_token := c.lease_token;
        lease_expires_at := c.lease_expires_at; tenant_id := c.tenant_id;
        available_at := c.available_at; started_at := c.started_at;
        RETURN NEXT;
    END LOOP;
    IF v_run IS NOT NULL THEN
        PERFORM warden.append_events(v_tenant, v_run, v_events);
    END IF;
END $$;

-- The four group roles of docs/security.md (NOLOGIN: login roles are granted them).
-- Roles belong to the cluster, not the database: they are created once, by whoever first
-- migrates a Warden database on the server, and reused by every other. A migrating role
-- that may not create roles stops here with the SQL an administrator runs instead.
DO $roles$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['warden_owner', 'warden_engine', 'warden_worker',
                                  'warden_auditor'] LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = v_role);
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- another session created it meanwhile
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'this role may not create roles; Warden needs four'
                    USING ERRCODE = 'WD403',
                          HINT = 'an administrator runs: CREATE ROLE warden_owner NOLOGIN; '
                              || 'CREATE ROLE warden_engine NOLOGIN; '
                              || 'CREATE ROLE warden_worker NOLOGIN; '
                              || 'CREATE ROLE warden_auditor NOLOGIN; '
                              || 'GRANT warden_owner TO ' || quote_ident(current_user)
                              || '; then runs warden migrate again';
        END;
    END LOOP;
END $roles$;

-- warden_owner owns the schema and every object in it; it is used for migrations only.
-- Not a superuser: the SECURITY DEFINER worker functions run with its rights, which are
-- exactly warden's tables, and no role an application logs in as owns a table (an owner
-- could disable the append-only triggers or rewrite rows at will).
DO $owner$
DECLARE
    v_object record;
BEGIN
    EXECUTE 'ALTER SCHEMA warden OWNER TO warden_owner';
    FOR v_object IN
        SELECT format('ALTER TABLE warden.%I OWNER TO warden_owner', c.relname) AS stmt
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace = 'warden'::regnamespace AND c.relkind IN ('r', 'p', 'v')
        UNION ALL
        SELECT format('ALTER FUNCTION warden.%I(%s) OWNER TO warden_owner', p.proname,
                      pg_catalog.pg_get_function_identity_arguments(p.oid))
          FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'warden'::regnamespace
        UNION ALL
        SELECT format('ALTER TYPE warden.%I OWNER TO warden_owner', t.typname)
          FROM pg_catalog.pg_type t
         WHERE t.typnamespace = 'warden'::regnamespace AND t.typtype = 'e'
    LOOP
        EXECUTE v_object.stmt;
    END LOOP;
END $owner$;
-- Functions created later by the owner are not executable by everyone (PostgreSQL's
-- default): each revision grants what it means to. (Global, not IN SCHEMA: a per-schema
-- default can only add to the global one, never take PUBLIC's EXECUTE away.)
ALTER DEFAULT PRIVILEGES FOR ROLE warden_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- What each role may do (docs/security.md). Nothing is granted to PUBLIC.
REVOKE ALL ON SCHEMA warden FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA warden FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA warden FROM PUBLIC;
GRANT USAGE ON SCHEMA warden TO warden_engine, warden_worker, warden_auditor;

-- ---------------------------------------------------------------- warden_worker
-- The job protocol and nothing else: no table privilege at all. Each function checks the
-- login role's grants (warden.worker_grants) and fences every write by the lease.
GRANT EXECUTE ON FUNCTION
    warden.claim_jobs(text[], text, integer, interval),
    warden.heartbeat_job(text, uuid, interval, jsonb),
    warden.complete_job(text, uuid, jsonb),
    warden.complete_jobs(text[], uuid[], jsonb[]),
    warden.fail_job(text, uuid, jsonb, boolean),
    warden.release_job(text, uuid, text)
    TO warden_worker, warden_engine;

-- ---------------------------------------------------------------- warden_engine
-- `warden serve`: reads everything of the tenants in scope (row-level security,
-- sql/grants/30_row_security.sql), writes the state it moves, and only appends to the
-- audit records: never UPDATE, DELETE or TRUNCATE on the timeline or the policy records,
-- and it owns nothing, so it cannot disable a trigger. Timeline events are written only
-- by warden.append_events (SECURITY DEFINER), which computes the chain: the engine
-- cannot insert an event of its own making, nor move a run's timeline head.
GRANT SELECT ON ALL TABLES IN SCHEMA warden TO warden_engine;
GRANT INSERT ON warden.workflows, warden.runs, warden.steps, warden.jobs, warden.approvals,
    warden.notifications, warden.policy_snapshots, warden.policy_active,
    warden.policy_activations, warden.policy_decisions, warden.api_keys TO warden_engine;
GRANT UPDATE (status, output, error, started_at, finished_at, needs_scheduling)
    ON warden.runs TO warden_engine;
GRANT UPDATE (status, attempts, max_attempts, retry_at, output, error, started_at,
              finished_at) ON warden.steps TO warden_engine;
-- never result, worker, lease_token or checkpoint: those are the lease holder's
GRANT UPDATE (status, policy_snapshot_hash, constraints, timeout_ms, available_at,
              finished_at, error, unclaimed_reported_at) ON warden.jobs TO warden_engine;
-- a decision only: who asked, for which run and job hash, is fixed at insert
GRANT UPDATE (status, decided_by, decided_at, reason) ON warden.approvals TO warden_engine;
GRANT UPDATE ON warden.notifications TO warden_engine;
GRANT UPDATE (snapshot_hash, activated_by, activated_at) ON warden.policy_active
    TO warden_engine;
GRANT UPDATE (revoked_at, last_used_at) ON warden.api_keys TO warden_engine;
GRANT EXECUTE ON FUNCTION
    warden.now(), warden.clock_timestamp(), warden.in_scope(text),
    warden.append_event(text, uuid, warden.timeline_kind, text, text, integer, text, jsonb),
    warden.append_events(text, uuid, jsonb), warden.wake_run(text, uuid),
    warden.reap_expired_jobs(integer), warden.verify_timeline(uuid)
    TO warden_engine;

-- ---------------------------------------------------------------- warden_auditor
-- Read-only: the records an audit reads, across tenants (docs/dba.md).
GRANT SELECT ON warden.timeline, warden.policy_decisions, warden.policy_snapshots,
    warden.policy_activations, warden.policy_active, warden.approvals, warden.runs,
    warden.steps, warden.jobs, warden.workflows TO warden_auditor;
GRANT EXECUTE ON FUNCTION warden.verify_timeline(uuid), warden.now(),
    warden.in_scope(text) TO warden_auditor;

-- Row-level security on every tenant table: a second fence behind the API's own tenant
-- checks. An engine session sees and writes only the rows of the tenant its transaction
-- carries in warden.tenant (warden.in_scope): each API request sets its caller's tenant,
-- and only the loops that act across tenants by design set '*' (engine/store/scope.py).
-- A query written without any tenant filter, inside an API request, returns that
-- tenant's rows alone. Auditors read across tenants. The owner is not subject to these
-- policies (no FORCE), so the SECURITY DEFINER worker functions, which check the
-- worker's grants themselves, see every tenant.
DO $rls$
DECLARE
    v_table text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['workflows', 'runs', 'steps', 'jobs', 'approvals',
                                   'notifications', 'timeline', 'policy_snapshots',
                                   'policy_active', 'policy_activations',
                                   'policy_decisions'] LOOP
        EXECUTE format('ALTER TABLE warden.%I ENABLE ROW LEVEL SECURITY', v_table);
        EXECUTE format('DROP POLICY IF EXISTS tenant_scope ON warden.%I', v_table);
        EXECUTE format('CREATE POLICY tenant_scope ON warden.%I TO warden_engine '
                       'USING (warden.in_scope(tenant_id)) '
                       'WITH CHECK (warden.in_scope(tenant_id))', v_table);
        EXECUTE format('DROP POLICY IF EXISTS audit_reads ON warden.%I', v_table);
        EXECUTE format('CREATE POLICY audit_reads ON warden.%I FOR SELECT TO warden_auditor '
                       'USING (true)', v_table);
    END LOOP;
END $rls$;

"""

DOWNGRADE = r"""
SET LOCAL check_function_bodies = off;
DO $undo$
DECLARE
    v_table text;
    v_object record;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['workflows', 'runs', 'steps', 'jobs', 'approvals',
                                   'notifications', 'timeline', 'policy_snapshots',
                                   'policy_active', 'policy_activations',
                                   'policy_decisions'] LOOP
        EXECUTE format('DROP POLICY IF EXISTS tenant_scope ON warden.%I', v_table);
        EXECUTE format('DROP POLICY IF EXISTS audit_reads ON warden.%I', v_table);
        EXECUTE format('ALTER TABLE warden.%I DISABLE ROW LEVEL SECURITY', v_table);
    END LOOP;
    EXECUTE 'REVOKE ALL ON ALL TABLES IN SCHEMA warden FROM warden_engine, warden_worker, '
            'warden_auditor';
    EXECUTE 'REVOKE ALL ON ALL FUNCTIONS IN SCHEMA warden FROM warden_engine, warden_worker, '
            'warden_auditor';
    EXECUTE 'REVOKE ALL ON SCHEMA warden FROM warden_engine, warden_worker, warden_auditor';
    EXECUTE 'ALTER DEFAULT PRIVILEGES FOR ROLE warden_owner '
            'GRANT EXECUTE ON FUNCTIONS TO PUBLIC';
    EXECUTE format('ALTER SCHEMA warden OWNER TO %I', current_user);
    FOR v_object IN
        SELECT format('ALTER TABLE warden.%I OWNER TO %I', c.relname, current_user) AS stmt
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace = 'warden'::regnamespace AND c.relkind IN ('r', 'p', 'v')
        UNION ALL
        SELECT format('ALTER FUNCTION warden.%I(%s) OWNER TO %I', p.proname,
                      pg_catalog.pg_get_function_identity_arguments(p.oid), current_user)
          FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'warden'::regnamespace
        UNION ALL
        SELECT format('ALTER TYPE warden.%I OWNER TO %I', t.typname, current_user)
          FROM pg_catalog.pg_type t
         WHERE t.typnamespace = 'warden'::regnamespace AND t.typtype = 'e'
    LOOP
        EXECUTE v_object.stmt;
    END LOOP;
END $undo$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA warden TO PUBLIC;
DROP FUNCTION warden.claim_jobs(text[], text, integer, interval);
-- Claims up to max_jobs claimable jobs of the given topics for `worker`, leasing each
-- for `lease` (never past the attempt's timeout), and returns what the worker needs.
-- The job protocol's entry point for workers in any language (docs/sql-worker.md).
--
-- Claimable: pending, available_at reached, and dispatched under the policy snapshot
-- that is still its tenant's active one (a drifted job is skipped here and re-evaluated
-- by the scheduler, which the activation woke).
CREATE OR REPLACE FUNCTION warden.claim_jobs(
    topics text[], worker text, max_jobs integer, lease interval
) RETURNS TABLE (
    job_id text, run_id uuid, step_id text, attempt integer, topic text, input jsonb,
    upstream jsonb, checkpoint jsonb, constraints jsonb, lease_token uuid,
    lease_expires_at timestamptz, tenant_id text
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c            record;
    v_now        timestamptz := warden.now();
    v_run_status warden.run_status;
    v_tenant     text;
    v_run        uuid;
    v_events     jsonb;
BEGIN
    IF claim_jobs.max_jobs < 1 OR claim_jobs.lease <= interval '0' THEN
        RAISE EXCEPTION 'max_jobs must be >= 1 and lease > 0' USING ERRCODE = '22023';
    END IF;
    FOR c IN
        -- One ordered scan of jobs_claimable per topic: with topic = ANY(topics) the index
        -- cannot give the (priority, available_at) order, so every claim would read and
        -- sort every pending job of its topics. Equality on the leading column gives the
        -- order, and LIMIT stops each scan after max_jobs rows. SKIP LOCKED: concurrent
        -- claimers take disjoint rows instead of queueing behind each other. A worker of
        -- several topics may lock up to max_jobs rows per topic for the length of this
        -- statement; the ones the outer LIMIT drops are unlocked at its commit, claimable
        -- again at once.
        WITH picked AS (
            SELECT p.tenant_id, p.job_id
              FROM (SELECT DISTINCT u.topic FROM unnest(claim_jobs.topics) AS u(topic)) t
             CROSS JOIN LATERAL (
                   SELECT j.tenant_id, j.job_id, j.priority, j.available_at
                     FROM warden.jobs j
                    WHERE j.status = 'pending' AND j.topic = t.topic
                      AND j.available_at <= v_now
                      -- one primary-key probe per candidate row
                      AND j.policy_snapshot_hash IS NOT DISTINCT FROM (
                          SELECT a.snapshot_hash FROM warden.policy_active a
                           WHERE a.tenant_id = j.tenant_id)
                    ORDER BY j.priority, j.available_at
                    LIMIT claim_jobs.max_jobs
                      FOR UPDATE OF j SKIP LOCKED) p
             ORDER BY p.priority, p.available_at
             LIMIT claim_jobs.max_jobs
        ), claimed AS (
            UPDATE warden.jobs j
               SET status = 'running', worker = claim_jobs.worker,
                   lease_token = gen_random_uuid(), started_at = v_now,
                   deadline_at = v_now + make_interval(secs => j.timeout_ms / 1000.0),
                   lease_expires_at = least(v_now + claim_jobs.lease,
                                            v_now + make_interval(secs => j.timeout_ms / 1000.0))
              FROM picked p
             WHERE j.tenant_id = p.tenant_id AND j.job_id = p.job_id
            RETURNING j.*
        )
        -- runs are locked in (tenant, run) order: two claimers holding disjoint jobs of
        -- the same runs then never wait on each other in a cycle
        SELECT * FROM claimed k ORDER BY k.tenant_id, k.run_id, k.job_id
    LOOP
        -- Each run is locked once per claim, and its events are appended in one call
        -- when the claim moves to the next run (not once per claimed job: a fan-out's
        -- workers and its scheduler would queue on the run row for each).
        IF v_run IS DISTINCT FROM c.run_id OR v_tenant IS DISTINCT FROM c.tenant_id THEN
            IF v_run IS NOT NULL THEN
                PERFORM warden.append_events(v_tenant, v_run, v_events);
            END IF;
            v_tenant := c.tenant_id;
            v_run := c.run_id;
            v_events := '[]';
            -- under the run's lock: a run cancelled (or otherwise ended) while this claim
            -- waited does not hand its job out; the job ends cancelled instead
            SELECT r.status INTO v_run_status FROM warden.runs r
             WHERE r.tenant_id = c.tenant_id AND r.run_id = c.run_id
               FOR NO KEY UPDATE;
        END IF;
        IF v_run_status IN ('succeeded', 'failed', 'denied', 'cancelled', 'timed_out') THEN
            UPDATE warden.jobs j SET status = 'cancelled', finished_at = v_now,
                   error = jsonb_build_object('type', 'RunEnded', 'run_status', v_run_status)
             WHERE j.tenant_id = c.tenant_id AND j.job_id = c.job_id;
            v_events := v_events || jsonb_build_array(jsonb_build_object(
                'kind', 'job.cancelled', 'step_id', c.step_id, 'job_id', c.job_id,
                'attempt', c.attempt, 'actor', claim_jobs.worker,
                'data', jsonb_build_object('reason', 'run ended before the claim completed')));
            CONTINUE;
        END IF;
        v_events := v_events || jsonb_build_array(jsonb_build_object(
            'kind', 'job.claimed', 'step_id', c.step_id, 'job_id', c.job_id,
            'attempt', c.attempt, 'actor', claim_jobs.worker,
            'data', jsonb_build_object('lease_expires_at', c.lease_expires_at)));
        job_id := c.job_id; run_id := c.run_id; step_id := c.step_id; attempt := c.attempt;
        topic := c.topic; input := c.input; upstream := c.upstream; checkpoint := c.checkpoint;
        constraints := c.constraints; lease_token := c.lease_token;
        lease_expires_at := c.lease_expires_at; tenant_id := c.tenant_id;
        RETURN NEXT;
    END LOOP;
    IF v_run IS NOT NULL THEN
        PERFORM warden.append_events(v_tenant, v_run, v_events);
    END IF;
END $$;

-- Raises the typed error of a fenced single-job write: WD002 cancelled, WD404 not found,
-- WD001 lease lost (engine/store/connection.py maps each to its WardenError).
CREATE OR REPLACE FUNCTION warden.raise_fenced(p_job_id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_outcome text := warden.fence_outcome(p_job_id);
BEGIN
    IF v_outcome = 'not_found' THEN
        RAISE EXCEPTION 'job % not found', p_job_id USING ERRCODE = 'WD404';
    ELSIF v_outcome = 'cancelled' THEN
        RAISE EXCEPTION 'job % was cancelled', p_job_id USING ERRCODE = 'WD002';
    END IF;
    RAISE EXCEPTION 'lease on job % lost', p_job_id USING ERRCODE = 'WD001';
END $$;

-- THE fence: a worker's write to a job lands only while the worker still holds the job's
-- lease — the job is running, the token is the one this claim handed out, and the lease
-- has not expired, whether or not the reaper has seen it yet. Every worker write
-- (heartbeat_job, complete_job(s), fail_job, release_job) filters on this and nothing
-- else. A SQL function so the planner inlines it into each UPDATE's WHERE clause: the
-- job is still found by its index (jobs_by_job_id), the fence is evaluated on that row.
CREATE OR REPLACE FUNCTION warden.lease_held(j warden.jobs, presented uuid) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT j.status = 'running' AND j.lease_token = presented
       AND j.lease_expires_at > warden.now()
$$;

-- Why a fenced write to p_job_id matched no row, in the one vocabulary every path uses:
-- 'cancelled' (its run was cancelled: stop working on it), 'not_found' (no such job), or
-- 'lease_lost' (expired, reaped, re-claimed, or already finished). complete_jobs returns
-- these as outcomes; the single-job functions raise them (raise_fenced).
CREATE OR REPLACE FUNCTION warden.fence_outcome(p_job_id text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT CASE WHEN j.status = 'cancelled' THEN 'cancelled'
                                 ELSE 'lease_lost' END
                       FROM warden.jobs j WHERE j.job_id = p_job_id), 'not_found')
$$;

-- Extends a held lease (never past the attempt's deadline, timeout_ms after its start)
-- and stores the checkpoint if one is given; returns the new expiry. Fenced
-- (warden.lease_held): raises WD001 / WD002 / WD404 once the lease is gone, which is how a
-- worker learns that its run was cancelled.
CREATE OR REPLACE FUNCTION warden.heartbeat_job(
    job_id text, lease_token uuid, extend interval, checkpoint jsonb DEFAULT NULL
) RETURNS timestamptz LANGUAGE plpgsql AS $$
DECLARE
    j warden.jobs;
BEGIN
    UPDATE warden.jobs t
       SET lease_expires_at = least(warden.now() + extend, coalesce(t.deadline_at, 'infinity')),
           checkpoint = coalesce(heartbeat_job.checkpoint, t.checkpoint)
     WHERE t.job_id = heartbeat_job.job_id
       AND warden.lease_held(t, heartbeat_job.lease_token)
    RETURNING t.* INTO j;
    IF NOT FOUND THEN
        PERFORM warden.raise_fenced(heartbeat_job.job_id);
    END IF;
    IF heartbeat_job.checkpoint IS NOT NULL THEN
        PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.checkpointed', j.step_id,
            j.job_id, j.attempt, j.worker, jsonb_build_object(
                'bytes', octet_length(heartbeat_job.checkpoint::text),
                'sha256', encode(sha256(convert_to(heartbeat_job.checkpoint::text, 'UTF8')),
                                 'hex')));
    END IF;
    RETURN j.lease_expires_at;
END $$;

-- Completes one job under its lease token: complete_jobs with a batch of one, raising
-- the fenced outcome as its typed error (raise_fenced) instead of returning it.
CREATE OR REPLACE FUNCTION warden.complete_job(job_id text, lease_token uuid, result jsonb)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT c.outcome FROM warden.complete_jobs(ARRAY[complete_job.job_id],
            ARRAY[complete_job.lease_token], ARRAY[complete_job.result]) c) <> 'completed' THEN
        PERFORM warden.raise_fenced(complete_job.job_id);
    END IF;
END $$;

-- Completes a worker's batch of jobs in one statement (one commit for all of them: with
-- durability on, a commit per job capped a worker at a few hundred jobs/s). Each job is
-- fenced like every worker write (warden.lease_held), and gets an outcome row instead of
-- an error, so one stale lease does not throw the rest of the batch away: 'completed',
-- or why the write was fenced (warden.fence_outcome: 'lease_lost', 'cancelled',
-- 'not_found').
CREATE OR REPLACE FUNCTION warden.complete_jobs(
    job_ids text[], lease_tokens uuid[], results jsonb[])
RETURNS TABLE (job_id text, outcome text) LANGUAGE plpgsql AS $$
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

-- Fails one job under its lease token (fenced: warden.lease_held) and schedules the
-- step's next attempt when one is left and the error is retryable (end_attempt).
CREATE OR REPLACE FUNCTION warden.fail_job(job_id text, lease_token uuid, error jsonb,
                                           retryable boolean)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    j warden.jobs;
BEGIN
    UPDATE warden.jobs t
       SET status = 'failed', error = fail_job.error, finished_at = warden.now()
     WHERE t.job_id = fail_job.job_id AND warden.lease_held(t, fail_job.lease_token)
    RETURNING t.* INTO j;
    IF NOT FOUND THEN
        PERFORM warden.raise_fenced(fail_job.job_id);
    END IF;
    PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.failed', j.step_id, j.job_id,
        j.attempt, j.worker, jsonb_build_object('error', fail_job.error,
                                                'retryable', fail_job.retryable));
    PERFORM warden.end_attempt(j, 'failed', fail_job.error, fail_job.retryable);
END $$;

-- A worker that stops gives its job back: the attempt ends (fenced by the lease token
-- like every worker write) and the next one is scheduled at once. A release is the
-- worker's decision, not the job's failure: the step's max_attempts grows by one so the
-- released attempt is not counted against its retries.
CREATE OR REPLACE FUNCTION warden.release_job(job_id text, lease_token uuid, reason text)
RETURNS void LANGUAGE plpgsql AS $$
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

-- Ends attempts whose lease expired as timed_out and schedules their retries; returns
-- the number reaped. The complement of warden.lease_held: a job it reaps is one no
-- worker write can land on any more. SKIP LOCKED lets any number of reapers run side by
-- side, and skips a job whose worker is writing to it right now.
CREATE OR REPLACE FUNCTION warden.reap_expired_jobs(p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    j     warden.jobs;
    v_n   integer := 0;
    v_now timestamptz := warden.now();
BEGIN
    FOR j IN
        WITH expired AS (
            -- jobs_running_lease serves this scan in expiry order
            SELECT t.tenant_id, t.job_id FROM warden.jobs t
             WHERE t.status = 'running' AND t.lease_expires_at <= v_now
             ORDER BY t.lease_expires_at
             LIMIT p_limit
               FOR UPDATE SKIP LOCKED
        ), reaped AS (
            UPDATE warden.jobs t
               SET status = 'timed_out', finished_at = v_now,
                   error = jsonb_build_object('type', 'LeaseExpired',
                       'message', 'lease expired at ' || t.lease_expires_at)
              FROM expired e
             WHERE t.tenant_id = e.tenant_id AND t.job_id = e.job_id
            RETURNING t.*
        )
        SELECT * FROM reaped r ORDER BY r.tenant_id, r.run_id, r.job_id  -- run lock order
    LOOP
        PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.timed_out', j.step_id, j.job_id,
                                    j.attempt, 'reaper', jsonb_build_object('error', j.error));
        PERFORM warden.end_attempt(j, 'timed_out', j.error, true);
        v_n := v_n + 1;
    END LOOP;
    RETURN v_n;
END $$;

-- Appends a run's events, in order, and returns the seq of the last one (the head's seq
-- for an empty array). p_events: a JSON array of {kind, step_id, job_id, attempt, actor,
-- data}.
--
-- The run row is locked first (FOR NO KEY UPDATE: it does not block the foreign-key
-- checks of rows that reference the run), so seq is gapless and follows commit order:
-- whoever appends next waits for this transaction and reads the head it leaves. One
-- update of the run's timeline head per call, however many events.
CREATE OR REPLACE FUNCTION warden.append_events(p_tenant text, p_run uuid, p_events jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
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

-- True when the run's chain is intact: seq gapless from 1, every prev_hash links, every
-- hash recomputes, and the head stored on the run matches the last event (so a deleted
-- tail is caught too).
CREATE OR REPLACE FUNCTION warden.verify_timeline(p_run uuid) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
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

DROP FUNCTION warden.granted(text, text);
DROP FUNCTION warden.in_scope(text);
DROP TABLE warden.worker_grants;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
