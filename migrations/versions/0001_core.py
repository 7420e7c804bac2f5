"""Core schema: workflows, runs, steps, jobs, approvals, notifications, timeline.

Revision ID: 0001_core
Revises:
Create Date: 2026-11-25

Frozen: later changes go into new revisions (CREATE OR REPLACE for functions).

Lock order, followed by every function here and by the engine, so that concurrent
transactions never wait on each other in a cycle:

    jobs  ->  approvals  ->  runs  ->  steps

A transaction that touches several runs locks them in (tenant_id, run_id) order. The
scheduler takes runs with SKIP LOCKED and only *inserts* jobs and approvals, so it never
waits on a lock that a worker holds while the worker waits for the run.
"""

from alembic import op

revision = "0001_core"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE SCHEMA warden;

-- ---------------------------------------------------------------- enums
CREATE TYPE warden.run_status AS ENUM
    ('pending', 'running', 'waiting', 'succeeded', 'failed', 'denied', 'cancelled', 'timed_out');
CREATE TYPE warden.step_status AS ENUM
    ('pending', 'running', 'waiting', 'succeeded', 'failed', 'denied', 'cancelled', 'timed_out',
     'skipped');
CREATE TYPE warden.job_status AS ENUM
    ('blocked', 'pending', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'denied');
CREATE TYPE warden.approval_status AS ENUM
    ('pending', 'approved', 'rejected', 'expired', 'superseded');
CREATE TYPE warden.step_type AS ENUM ('job', 'approval', 'notify');
CREATE TYPE warden.approval_kind AS ENUM ('step', 'policy');
CREATE TYPE warden.timeline_kind AS ENUM (
    'run.created', 'run.started', 'run.waiting', 'run.resumed',
    'run.succeeded', 'run.failed', 'run.denied', 'run.cancelled', 'run.timed_out', 'run.rerun',
    'policy.decision', 'step.ready', 'step.skipped',
    'job.dispatched', 'job.claimed', 'job.checkpointed', 'job.succeeded', 'job.failed',
    'job.retry_scheduled', 'job.timed_out', 'job.cancelled',
    'approval.requested', 'approval.approved', 'approval.rejected', 'approval.expired',
    'approval.superseded',
    'notify.sent', 'reconciler.repaired');

-- ---------------------------------------------------------------- workflows
CREATE TABLE warden.workflows (
    tenant_id       text        NOT NULL,
    workflow_id     text        NOT NULL,
    version         text        NOT NULL,
    -- semver parts, so "latest" is an index-ordered query rather than a client sort
    version_major   integer     NOT NULL,
    version_minor   integer     NOT NULL,
    version_patch   integer     NOT NULL,
    version_pre     text,
    name            text        NOT NULL,
    definition      jsonb       NOT NULL,
    digest          text        NOT NULL,
    source          text        NOT NULL,
    created_by      text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, workflow_id, version)
);
CREATE INDEX workflows_latest ON warden.workflows
    (tenant_id, workflow_id, version_major DESC, version_minor DESC, version_patch DESC);

-- ---------------------------------------------------------------- runs
CREATE TABLE warden.runs (
    tenant_id         text              NOT NULL,
    run_id            uuid              NOT NULL DEFAULT gen_random_uuid(),
    workflow_id       text              NOT NULL,
    workflow_version  text              NOT NULL,
    status            warden.run_status NOT NULL DEFAULT 'pending',
    input             jsonb             NOT NULL DEFAULT '{}',
    output            jsonb,
    error             jsonb,
    idempotency_key   text,
    -- sha256 of the canonical start request: same key + same digest replays the run
    request_digest    text              NOT NULL,
    rerun_of          uuid,
    created_by        text              NOT NULL,
    created_at        timestamptz       NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    deadline_at       timestamptz,
    -- set by anything that may let the run move; the scheduler clears it
    needs_scheduling  boolean           NOT NULL DEFAULT true,
    -- head of the per-run timeline: the next event takes seq + 1 and chains on hash
    timeline_seq      bigint            NOT NULL DEFAULT 0,
    timeline_hash     text              NOT NULL DEFAULT repeat('0', 64),
    PRIMARY KEY (tenant_id, run_id),
    FOREIGN KEY (tenant_id, workflow_id, workflow_version)
        REFERENCES warden.workflows (tenant_id, workflow_id, version),
    CONSTRAINT runs_idempotency UNIQUE (tenant_id, workflow_id, idempotency_key),
    CONSTRAINT runs_finished_iff_final CHECK (
        (finished_at IS NOT NULL) =
        (status IN ('succeeded', 'failed', 'denied', 'cancelled', 'timed_out'))),
    CONSTRAINT runs_idempotency_key_length CHECK (length(idempotency_key) BETWEEN 1 AND 255)
);
-- The scheduler's work queue: tiny, because the flag is cleared right after each pass.
CREATE INDEX runs_to_schedule ON warden.runs (tenant_id, run_id) WHERE needs_scheduling;
CREATE INDEX runs_by_created ON warden.runs (tenant_id, created_at DESC, run_id DESC);
CREATE INDEX runs_by_status ON warden.runs (tenant_id, status, created_at DESC);
CREATE INDEX runs_open_deadline ON warden.runs (deadline_at)
    WHERE deadline_at IS NOT NULL AND finished_at IS NULL;

-- ---------------------------------------------------------------- steps
CREATE TABLE warden.steps (
    tenant_id       text               NOT NULL,
    run_id          uuid               NOT NULL,
    step_id         text               NOT NULL,
    type            warden.step_type   NOT NULL,
    status          warden.step_status NOT NULL DEFAULT 'pending',
    depends_on      text[]             NOT NULL DEFAULT '{}',
    topic           text,
    attempts        integer            NOT NULL DEFAULT 0,
    -- retry contract copied from the pinned definition, so SQL workers' fail_job can
    -- schedule the retry without reading YAML
    max_attempts    integer            NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
    backoff_ms      integer            NOT NULL DEFAULT 1000 CHECK (backoff_ms >= 0),
    max_backoff_ms  integer            NOT NULL DEFAULT 300000 CHECK (max_backoff_ms >= 0),
    multiplier      double precision   NOT NULL DEFAULT 2 CHECK (multiplier >= 1),
    jitter          double precision   NOT NULL DEFAULT 0.1 CHECK (jitter BETWEEN 0 AND 1),
    timeout_ms      integer            CHECK (timeout_ms >= 1),
    priority        smallint           NOT NULL DEFAULT 5,
    -- when set, the scheduler dispatches attempt (attempts + 1), claimable from this time
    retry_at        timestamptz,
    output          jsonb,
    error           jsonb,
    started_at      timestamptz,
    finished_at     timestamptz,
    PRIMARY KEY (tenant_id, run_id, step_id),
    FOREIGN KEY (tenant_id, run_id) REFERENCES warden.runs (tenant_id, run_id),
    CONSTRAINT steps_finished_iff_final CHECK (
        (finished_at IS NOT NULL) =
        (status IN ('succeeded', 'failed', 'denied', 'cancelled', 'timed_out', 'skipped'))),
    CONSTRAINT steps_topic_iff_job CHECK ((topic IS NOT NULL) = (type = 'job')),
    CONSTRAINT steps_retry_only_while_running CHECK (retry_at IS NULL OR status = 'running')
);

-- ---------------------------------------------------------------- jobs
CREATE TABLE warden.jobs (
    tenant_id             text              NOT NULL,
    job_id                text              NOT NULL,
    run_id                uuid              NOT NULL,
    step_id               text              NOT NULL,
    attempt               integer           NOT NULL CHECK (attempt >= 1),
    topic                 text              NOT NULL,
    status                warden.job_status NOT NULL DEFAULT 'pending',
    priority              smallint          NOT NULL DEFAULT 5,
    input                 jsonb             NOT NULL DEFAULT '{}',
    upstream              jsonb             NOT NULL DEFAULT '{}',
    constraints           jsonb             NOT NULL DEFAULT '{}',
    checkpoint            jsonb,
    result                jsonb,
    error                 jsonb,
    worker                text,
    lease_token           uuid,
    lease_expires_at      timestamptz,
    timeout_ms            integer           CHECK (timeout_ms >= 1),
    -- started_at + timeout_ms: heartbeats never extend a lease past it
    deadline_at           timestamptz,
    available_at          timestamptz       NOT NULL DEFAULT now(),
    policy_snapshot_hash  text,
    created_at            timestamptz       NOT NULL DEFAULT now(),
    started_at            timestamptz,
    finished_at           timestamptz,
    PRIMARY KEY (tenant_id, job_id),
    CONSTRAINT jobs_one_row_per_attempt UNIQUE (tenant_id, run_id, step_id, attempt),
    FOREIGN KEY (tenant_id, run_id, step_id) REFERENCES warden.steps (tenant_id, run_id, step_id),
    CONSTRAINT jobs_id_format CHECK (job_id = run_id::text || ':' || step_id || '@' || attempt),
    CONSTRAINT jobs_running_has_lease CHECK (status <> 'running' OR (
        lease_token IS NOT NULL AND lease_expires_at IS NOT NULL
        AND worker IS NOT NULL AND started_at IS NOT NULL)),
    CONSTRAINT jobs_finished_iff_final CHECK (
        (finished_at IS NOT NULL) =
        (status IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'denied')))
);
-- The claim index: only claimable rows, in claim order. Kept small because a job leaves
-- it the moment it is claimed (claim_jobs relies on it; a test checks the plan).
CREATE INDEX jobs_claimable ON warden.jobs (topic, priority, available_at)
    WHERE status = 'pending';
-- The reaper's index: running jobs by lease expiry.
CREATE INDEX jobs_running_lease ON warden.jobs (lease_expires_at) WHERE status = 'running';
-- Worker functions address a job by its id alone (workers are tenant-agnostic).
CREATE INDEX jobs_by_job_id ON warden.jobs (job_id);
CREATE INDEX jobs_by_status_topic ON warden.jobs (tenant_id, status, topic, created_at DESC);

-- ---------------------------------------------------------------- approvals
CREATE TABLE warden.approvals (
    tenant_id             text                   NOT NULL,
    approval_id           uuid                   NOT NULL DEFAULT gen_random_uuid(),
    run_id                uuid                   NOT NULL,
    step_id               text                   NOT NULL,
    job_id                text,
    kind                  warden.approval_kind   NOT NULL,
    status                warden.approval_status NOT NULL DEFAULT 'pending',
    policy_snapshot_hash  text,
    job_hash              text,
    -- the principal that started the run: it may never decide this approval
    requested_by          text                   NOT NULL,
    requested_at          timestamptz            NOT NULL DEFAULT now(),
    expires_at            timestamptz,
    decided_by            text,
    decided_at            timestamptz,
    reason                text,
    PRIMARY KEY (tenant_id, approval_id),
    FOREIGN KEY (tenant_id, run_id, step_id) REFERENCES warden.steps (tenant_id, run_id, step_id),
    CONSTRAINT approvals_no_self_approval CHECK (decided_by IS NULL OR decided_by <> requested_by),
    CONSTRAINT approvals_decided_iff_closed CHECK ((status = 'pending') = (decided_at IS NULL)),
    CONSTRAINT approvals_human_decision_has_principal CHECK (
        status NOT IN ('approved', 'rejected') OR decided_by IS NOT NULL)
);
CREATE UNIQUE INDEX approvals_one_pending_per_step ON warden.approvals (tenant_id, run_id, step_id)
    WHERE status = 'pending';
CREATE INDEX approvals_pending_by_expiry ON warden.approvals (expires_at) WHERE status = 'pending';
CREATE INDEX approvals_by_status ON warden.approvals (tenant_id, status, requested_at DESC);

-- ---------------------------------------------------------------- notifications (outbox)
CREATE TABLE warden.notifications (
    tenant_id        text        NOT NULL,
    notification_id  uuid        NOT NULL DEFAULT gen_random_uuid(),
    run_id           uuid        NOT NULL,
    step_id          text        NOT NULL,
    message          text,
    webhook          text,
    payload          jsonb       NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    PRIMARY KEY (tenant_id, notification_id),
    CONSTRAINT notifications_once_per_step UNIQUE (tenant_id, run_id, step_id),
    FOREIGN KEY (tenant_id, run_id, step_id) REFERENCES warden.steps (tenant_id, run_id, step_id)
);
CREATE INDEX notifications_undelivered ON warden.notifications (created_at)
    WHERE delivered_at IS NULL AND webhook IS NOT NULL;

-- ---------------------------------------------------------------- timeline
CREATE TABLE warden.timeline (
    tenant_id  text                 NOT NULL,
    run_id     uuid                 NOT NULL,
    seq        bigint               NOT NULL CHECK (seq >= 1),
    at         timestamptz          NOT NULL,
    kind       warden.timeline_kind NOT NULL,
    step_id    text,
    job_id     text,
    attempt    integer,
    actor      text,
    data       jsonb                NOT NULL DEFAULT '{}',
    prev_hash  text                 NOT NULL,
    hash       text                 NOT NULL,
    PRIMARY KEY (tenant_id, run_id, seq)
);
CREATE INDEX timeline_by_job ON warden.timeline (tenant_id, job_id) WHERE job_id IS NOT NULL;
CREATE INDEX timeline_by_time ON warden.timeline (at);

CREATE FUNCTION warden.refuse_timeline_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'warden.timeline is append-only: % refused', TG_OP
        USING ERRCODE = 'WD010';
END $$;
CREATE TRIGGER timeline_no_update_delete BEFORE UPDATE OR DELETE ON warden.timeline
    FOR EACH ROW EXECUTE FUNCTION warden.refuse_timeline_change();
CREATE TRIGGER timeline_no_truncate BEFORE TRUNCATE ON warden.timeline
    FOR EACH STATEMENT EXECUTE FUNCTION warden.refuse_timeline_change();
REVOKE UPDATE, DELETE, TRUNCATE ON warden.timeline FROM PUBLIC;

-- The chained text of one event. Times enter as epoch microseconds so the hash does not
-- depend on the session's TimeZone or DateStyle; jsonb's text form is canonical.
CREATE FUNCTION warden.event_hash(
    prev_hash text, tenant_id text, run_id uuid, seq bigint, at timestamptz,
    kind warden.timeline_kind, step_id text, job_id text, attempt integer, actor text, data jsonb
) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(sha256(convert_to(concat_ws(E'\x1f',
        prev_hash, tenant_id, run_id::text, seq::text,
        (extract(epoch FROM at) * 1000000)::bigint::text,
        kind::text, coalesce(step_id, ''), coalesce(job_id, ''), coalesce(attempt::text, ''),
        coalesce(actor, ''), data::text), 'UTF8')), 'hex')
$$;

-- Appends one event to a run's timeline and returns its seq. Locks the run row, so seq is
-- gapless and in commit order; callers must already hold any job/approval locks they need
-- (lock order: jobs -> approvals -> runs -> steps).
CREATE FUNCTION warden.append_event(
    p_tenant text, p_run uuid, p_kind warden.timeline_kind, p_step text, p_job text,
    p_attempt integer, p_actor text, p_data jsonb
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_seq  bigint;
    v_prev text;
    v_at   timestamptz := clock_timestamp();
    v_hash text;
BEGIN
    SELECT timeline_seq + 1, timeline_hash INTO v_seq, v_prev
      FROM warden.runs WHERE tenant_id = p_tenant AND run_id = p_run
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run %/% not found', p_tenant, p_run USING ERRCODE = 'WD404';
    END IF;
    v_hash := warden.event_hash(v_prev, p_tenant, p_run, v_seq, v_at, p_kind, p_step, p_job,
                                p_attempt, p_actor, coalesce(p_data, '{}'));
    INSERT INTO warden.timeline
        (tenant_id, run_id, seq, at, kind, step_id, job_id, attempt, actor, data, prev_hash, hash)
    VALUES (p_tenant, p_run, v_seq, v_at, p_kind, p_step, p_job, p_attempt, p_actor,
            coalesce(p_data, '{}'), v_prev, v_hash);
    UPDATE warden.runs SET timeline_seq = v_seq, timeline_hash = v_hash
     WHERE tenant_id = p_tenant AND run_id = p_run;
    RETURN v_seq;
END $$;

-- True when the run's chain is intact: seq gapless from 1, every prev_hash links, every
-- hash recomputes, and the head stored on the run matches the last event (so a deleted
-- tail is caught too).
CREATE FUNCTION warden.verify_timeline(p_run uuid) RETURNS boolean LANGUAGE plpgsql STABLE AS $$
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

-- ---------------------------------------------------------------- run wake-ups
-- Marks a run for the scheduler and wakes schedulers. The NOTIFY carries no payload:
-- Postgres folds identical notifications of one transaction into one, and the
-- scheduler finds its work through runs_to_schedule anyway (NOTIFY is only a hint).
CREATE FUNCTION warden.wake_run(p_tenant text, p_run uuid) RETURNS void LANGUAGE sql AS $$
    UPDATE warden.runs SET needs_scheduling = true
     WHERE tenant_id = p_tenant AND run_id = p_run AND NOT needs_scheduling;
    SELECT pg_notify('warden_scheduler', '');
$$;

-- ---------------------------------------------------------------- job protocol
-- Explains why a fenced write matched no row, as a typed error.
CREATE FUNCTION warden.raise_fenced(p_job_id text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_status warden.job_status;
BEGIN
    SELECT status INTO v_status FROM warden.jobs WHERE job_id = p_job_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % not found', p_job_id USING ERRCODE = 'WD404';
    ELSIF v_status = 'cancelled' THEN
        RAISE EXCEPTION 'job % was cancelled', p_job_id USING ERRCODE = 'WD002';
    END IF;
    RAISE EXCEPTION 'lease on job % lost (status %)', p_job_id, v_status USING ERRCODE = 'WD001';
END $$;

CREATE FUNCTION warden.claim_jobs(
    topics text[], worker text, max_jobs integer, lease interval
) RETURNS TABLE (
    job_id text, run_id uuid, step_id text, attempt integer, topic text, input jsonb,
    upstream jsonb, checkpoint jsonb, constraints jsonb, lease_token uuid,
    lease_expires_at timestamptz, tenant_id text
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c record;
BEGIN
    IF claim_jobs.max_jobs < 1 OR claim_jobs.lease <= interval '0' THEN
        RAISE EXCEPTION 'max_jobs must be >= 1 and lease > 0' USING ERRCODE = '22023';
    END IF;
    -- SKIP LOCKED: concurrent claimers take disjoint rows instead of queueing behind each
    -- other; the partial index jobs_claimable serves the WHERE and ORDER BY.
    FOR c IN
        WITH picked AS (
            SELECT j.tenant_id, j.job_id FROM warden.jobs j
             WHERE j.status = 'pending' AND j.topic = ANY (claim_jobs.topics)
               AND j.available_at <= now()
             ORDER BY j.priority, j.available_at
             LIMIT claim_jobs.max_jobs
               FOR UPDATE SKIP LOCKED
        ), claimed AS (
            UPDATE warden.jobs j
               SET status = 'running', worker = claim_jobs.worker,
                   lease_token = gen_random_uuid(), started_at = now(),
                   deadline_at = now() + make_interval(secs => j.timeout_ms / 1000.0),
                   lease_expires_at = least(now() + claim_jobs.lease,
                                            now() + make_interval(secs => j.timeout_ms / 1000.0))
              FROM picked p
             WHERE j.tenant_id = p.tenant_id AND j.job_id = p.job_id
            RETURNING j.*
        )
        -- runs are locked (by append_event) in (tenant, run) order: two claimers holding
        -- disjoint jobs of the same runs then never wait on each other in a cycle
        SELECT * FROM claimed k ORDER BY k.tenant_id, k.run_id, k.job_id
    LOOP
        PERFORM warden.append_event(c.tenant_id, c.run_id, 'job.claimed', c.step_id, c.job_id,
            c.attempt, claim_jobs.worker,
            jsonb_build_object('lease_expires_at', c.lease_expires_at));
        job_id := c.job_id; run_id := c.run_id; step_id := c.step_id; attempt := c.attempt;
        topic := c.topic; input := c.input; upstream := c.upstream; checkpoint := c.checkpoint;
        constraints := c.constraints; lease_token := c.lease_token;
        lease_expires_at := c.lease_expires_at; tenant_id := c.tenant_id;
        RETURN NEXT;
    END LOOP;
END $$;

CREATE FUNCTION warden.heartbeat_job(
    job_id text, lease_token uuid, extend interval, checkpoint jsonb DEFAULT NULL
) RETURNS timestamptz LANGUAGE plpgsql AS $$
DECLARE
    j warden.jobs;
BEGIN
    -- never past the attempt's deadline (timeout_ms): a heartbeat cannot outlive it
    UPDATE warden.jobs t
       SET lease_expires_at = least(now() + extend, coalesce(t.deadline_at, 'infinity')),
           checkpoint = coalesce(heartbeat_job.checkpoint, t.checkpoint)
     WHERE t.job_id = heartbeat_job.job_id AND t.status = 'running'
       AND t.lease_token = heartbeat_job.lease_token AND t.lease_expires_at > now()
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

-- After an attempt ended without success: schedule the next attempt if the step has one
-- left and the error is retryable, else end the step with p_step_status.
CREATE FUNCTION warden.end_attempt(
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
        UPDATE warden.steps SET retry_at = now() + make_interval(secs => v_delay / 1000.0),
                                error = p_error
         WHERE tenant_id = s.tenant_id AND run_id = s.run_id AND step_id = s.step_id;
        PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.retry_scheduled', j.step_id,
            j.job_id, j.attempt, NULL, jsonb_build_object(
                'next_attempt', j.attempt + 1, 'delay_ms', round(v_delay),
                'retry_at', now() + make_interval(secs => v_delay / 1000.0)));
    ELSE
        UPDATE warden.steps SET status = p_step_status, error = p_error, finished_at = now(),
                                retry_at = NULL
         WHERE tenant_id = s.tenant_id AND run_id = s.run_id AND step_id = s.step_id;
    END IF;
    PERFORM warden.wake_run(j.tenant_id, j.run_id);
END $$;

CREATE FUNCTION warden.complete_job(job_id text, lease_token uuid, result jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    j warden.jobs;
BEGIN
    UPDATE warden.jobs t
       SET status = 'succeeded', result = complete_job.result, finished_at = now()
     WHERE t.job_id = complete_job.job_id AND t.status = 'running'
       AND t.lease_token = complete_job.lease_token AND t.lease_expires_at > now()
    RETURNING t.* INTO j;
    IF NOT FOUND THEN
        PERFORM warden.raise_fenced(complete_job.job_id);
    END IF;
    PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.succeeded', j.step_id, j.job_id,
                                j.attempt, j.worker, '{}');
    UPDATE warden.steps
       SET status = 'succeeded', output = complete_job.result, error = NULL,
           finished_at = now()
     WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
       AND status = 'running';
    PERFORM warden.wake_run(j.tenant_id, j.run_id);
END $$;

CREATE FUNCTION warden.fail_job(job_id text, lease_token uuid, error jsonb, retryable boolean)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    j warden.jobs;
BEGIN
    UPDATE warden.jobs t
       SET status = 'failed', error = fail_job.error, finished_at = now()
     WHERE t.job_id = fail_job.job_id AND t.status = 'running'
       AND t.lease_token = fail_job.lease_token AND t.lease_expires_at > now()
    RETURNING t.* INTO j;
    IF NOT FOUND THEN
        PERFORM warden.raise_fenced(fail_job.job_id);
    END IF;
    PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.failed', j.step_id, j.job_id,
        j.attempt, j.worker, jsonb_build_object('error', fail_job.error,
                                                'retryable', fail_job.retryable));
    PERFORM warden.end_attempt(j, 'failed', fail_job.error, fail_job.retryable);
END $$;

-- Ends attempts whose lease expired as timed_out and schedules their retries. Returns the
-- number reaped. SKIP LOCKED lets any number of reapers run side by side.
CREATE FUNCTION warden.reap_expired_jobs(p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    j     warden.jobs;
    v_n   integer := 0;
    v_err jsonb;
BEGIN
    FOR j IN
        WITH expired AS (
            SELECT t.tenant_id, t.job_id FROM warden.jobs t
             WHERE t.status = 'running' AND t.lease_expires_at <= now()
             ORDER BY t.lease_expires_at
             LIMIT p_limit
               FOR UPDATE SKIP LOCKED
        ), reaped AS (
            UPDATE warden.jobs t
               SET status = 'timed_out', finished_at = now(),
                   error = jsonb_build_object('type', 'LeaseExpired',
                       'message', 'lease expired at ' || t.lease_expires_at)
              FROM expired e
             WHERE t.tenant_id = e.tenant_id AND t.job_id = e.job_id
            RETURNING t.*
        )
        SELECT * FROM reaped r ORDER BY r.tenant_id, r.run_id, r.job_id  -- run lock order
    LOOP
        v_err := j.error;
        PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.timed_out', j.step_id, j.job_id,
                                    j.attempt, 'reaper', jsonb_build_object('error', v_err));
        PERFORM warden.end_attempt(j, 'timed_out', v_err, true);
        v_n := v_n + 1;
    END LOOP;
    RETURN v_n;
END $$;
"""

DOWNGRADE = r"""
DROP SCHEMA warden CASCADE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
