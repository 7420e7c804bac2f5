"""Baseline: the whole schema as of 2026-12-06, in one revision.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-12-06

Frozen. Revisions 0001_core to 0009_claim_per_topic were squashed into this one before
any of them shipped outside the repository: nine revisions restated claim_jobs five
times and complete_jobs three, and a reader had to replay them in their head to know
what the database is. The text below is a verbatim copy of the files under sql/ at this
revision (engine.store.schema.install_sql()); sql/ moves on, this does not. Later changes
are new revisions (docs/contributing.md).
"""

from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL check_function_bodies = off;
-- sql/schema/00_types.sql
-- The schema and its enum types. Each status enum has a Python StrEnum mirror in
-- engine/core/enums.py (compared by tests/db/test_schema.py), and the moves between its
-- values are listed once in engine/core/states.py (docs/design.md, "State machines").
CREATE SCHEMA warden;

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
CREATE TYPE warden.policy_decision AS ENUM
    ('allow', 'deny', 'require_approval', 'allow_with_constraints');
CREATE TYPE warden.policy_stage AS ENUM ('submit', 'dispatch');
CREATE TYPE warden.api_role AS ENUM ('submitter', 'approver', 'operator', 'admin', 'worker');
CREATE TYPE warden.notification_status AS ENUM ('pending', 'delivering', 'delivered', 'failed');

-- sql/schema/01_clock.sql
-- The database clock every lease, backoff, deadline and expiry is compared against
-- (warden.now(), sql/functions/now.sql). In production the table is empty and the clock is
-- the transaction's now(). Tests move time forward by writing the one row here instead of
-- sleeping; only the schema owner can write it, so no worker or engine session can bend
-- its own leases (a session setting would let any caller do that).
CREATE TABLE warden.clock (
    one    boolean  NOT NULL DEFAULT true PRIMARY KEY CHECK (one),
    shift  interval NOT NULL
);

-- sql/schema/10_workflows.sql
-- Stored workflow definitions: a (tenant, id, version) is immutable once stored.
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

-- sql/schema/20_runs.sql
-- Runs, their steps and the jobs (attempts) of their job steps.
--
-- Lock order, followed by every function in sql/functions and by the engine, so that
-- concurrent transactions never wait on each other in a cycle:
--
--     jobs  ->  approvals  ->  runs  ->  steps
--
-- A transaction that touches several runs locks them in (tenant_id, run_id) order. The
-- scheduler takes runs with SKIP LOCKED and only *inserts* jobs and approvals, so it never
-- waits on a lock that a worker holds while the worker waits for the run.

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
-- The reconciler looks at open runs only; finished ones are the vast majority.
CREATE INDEX runs_open ON warden.runs (tenant_id, run_id) WHERE finished_at IS NULL;

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
    -- set when the job waited past the dispatch timeout without a claim and was
    -- reported (once) by the reaper
    unclaimed_reported_at timestamptz,
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
-- it the moment it is claimed (warden.claim_jobs walks it once per topic; a test checks
-- the plan).
CREATE INDEX jobs_claimable ON warden.jobs (topic, priority, available_at)
    WHERE status = 'pending';
-- The reaper's index: running jobs by lease expiry.
CREATE INDEX jobs_running_lease ON warden.jobs (lease_expires_at) WHERE status = 'running';
-- Worker functions address a job by its id alone (workers are tenant-agnostic).
CREATE INDEX jobs_by_job_id ON warden.jobs (job_id);
CREATE INDEX jobs_by_status_topic ON warden.jobs (tenant_id, status, topic, created_at DESC);
-- Unclaimed jobs (pending, or blocked for a policy approval) per run: the scheduler's
-- check for jobs dispatched under a policy snapshot that is no longer active.
CREATE INDEX jobs_awaiting_claim ON warden.jobs (tenant_id, run_id)
    WHERE status IN ('pending', 'blocked');

-- sql/schema/30_approvals.sql
-- Human checkpoints: an approval step, or a require_approval policy decision, each bound
-- to the policy snapshot and the job hash it was asked under.
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

-- sql/schema/40_notifications.sql
-- The outbox of notify steps, and each webhook's delivery state (engine/daemons/notifier.py
-- leases due rows with SKIP LOCKED, POSTs outside any transaction and records the outcome
-- fenced by `attempts`). A notification without a webhook is delivered when written: the
-- outbox row is its delivery.
CREATE TABLE warden.notifications (
    tenant_id        text                       NOT NULL,
    notification_id  uuid                       NOT NULL DEFAULT gen_random_uuid(),
    run_id           uuid                       NOT NULL,
    step_id          text                       NOT NULL,
    message          text,
    webhook          text,
    payload          jsonb                      NOT NULL DEFAULT '{}',
    created_at       timestamptz                NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    status           warden.notification_status NOT NULL,
    -- POSTs begun (each claim counts one, even when its notifier died before an answer)
    attempts         integer                    NOT NULL DEFAULT 0,
    -- pending: when the next attempt is due; delivering: when the lease ends and another
    -- notifier may take the row over (its holder died mid-POST). NULL once final.
    next_attempt_at  timestamptz,
    last_attempt_at  timestamptz,
    -- the HTTP status of the last answer; NULL when there was none (timeout, refused, ...)
    last_status_code integer,
    last_error       text,
    failed_at        timestamptz,
    PRIMARY KEY (tenant_id, notification_id),
    CONSTRAINT notifications_once_per_step UNIQUE (tenant_id, run_id, step_id),
    FOREIGN KEY (tenant_id, run_id, step_id) REFERENCES warden.steps (tenant_id, run_id, step_id),
    CONSTRAINT notifications_webhook_is_http CHECK (webhook ~* '^https?://'),
    CONSTRAINT notifications_attempts_check CHECK (attempts >= 0),
    CONSTRAINT notifications_last_status_code_check CHECK (last_status_code BETWEEN 100 AND 599),
    CONSTRAINT notifications_delivered_iff_at
        CHECK ((status = 'delivered') = (delivered_at IS NOT NULL)),
    CONSTRAINT notifications_failed_iff_at CHECK ((status = 'failed') = (failed_at IS NOT NULL)),
    CONSTRAINT notifications_open_iff_due
        CHECK ((status IN ('pending', 'delivering')) = (next_attempt_at IS NOT NULL)),
    CONSTRAINT notifications_only_webhooks_wait CHECK (status = 'delivered' OR webhook IS NOT NULL)
);
-- The notifier's claim: open rows by due time (pending retries and expired leases alike).
-- Delivered and failed rows, nearly all of the table, stay out of it.
CREATE INDEX notifications_due ON warden.notifications (next_attempt_at)
    WHERE status IN ('pending', 'delivering');

-- sql/schema/50_timeline.sql
-- The append-only, hash-chained history of every run (docs/dba.md). seq is gapless per
-- run and assigned under the run's row lock, so it follows commit order; each event's
-- hash covers the previous one (warden.event_hash). UPDATE, DELETE and TRUNCATE are
-- refused by triggers (sql/triggers/append_only.sql) and by privileges.
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
REVOKE UPDATE, DELETE, TRUNCATE ON warden.timeline FROM PUBLIC;

-- sql/schema/60_policy.sql
-- Governance (docs/policy.md): immutable policy snapshots, the one active snapshot per
-- tenant and every activation, and every decision at every gate. A job is claimable only
-- while the snapshot recorded at its dispatch is still its tenant's active one; when it
-- changes, the scheduler re-evaluates the job before any worker can take it.

-- Immutable, content-addressed: the hash is sha256 of the bundle's canonical JSON.
CREATE TABLE warden.policy_snapshots (
    tenant_id      text        NOT NULL,
    snapshot_hash  text        NOT NULL CHECK (snapshot_hash ~ '^[0-9a-f]{64}$'),
    bundle         jsonb       NOT NULL,
    source         text        NOT NULL,
    created_by     text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, snapshot_hash)
);

-- The one active snapshot per tenant (what claim_jobs compares against).
CREATE TABLE warden.policy_active (
    tenant_id      text        NOT NULL PRIMARY KEY,
    snapshot_hash  text        NOT NULL,
    activated_by   text        NOT NULL,
    activated_at   timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, snapshot_hash)
        REFERENCES warden.policy_snapshots (tenant_id, snapshot_hash)
);

-- Every activation, with the snapshot it replaced: who switched policy, and when.
CREATE TABLE warden.policy_activations (
    tenant_id       text        NOT NULL,
    activation_id   bigint      GENERATED ALWAYS AS IDENTITY,
    snapshot_hash   text        NOT NULL,
    previous_hash   text,
    activated_by    text        NOT NULL,
    activated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, activation_id),
    FOREIGN KEY (tenant_id, snapshot_hash)
        REFERENCES warden.policy_snapshots (tenant_id, snapshot_hash)
);

-- Every decision at every gate. snapshot_hash NULL: no snapshot was active and the
-- configured default decided (recorded in reason).
CREATE TABLE warden.policy_decisions (
    tenant_id      text                   NOT NULL,
    decision_id    bigint                 GENERATED ALWAYS AS IDENTITY,
    stage          warden.policy_stage    NOT NULL,
    snapshot_hash  text,
    rule           text,
    decision       warden.policy_decision NOT NULL,
    reason         text                   NOT NULL,
    constraints    jsonb                  NOT NULL DEFAULT '{}',
    run_id         uuid                   NOT NULL,
    step_id        text                   NOT NULL,
    job_id         text,
    at             timestamptz            NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, decision_id),
    FOREIGN KEY (tenant_id, run_id, step_id) REFERENCES warden.steps (tenant_id, run_id, step_id),
    CONSTRAINT policy_decisions_job_at_dispatch CHECK ((job_id IS NOT NULL) = (stage = 'dispatch'))
);
CREATE INDEX policy_decisions_by_job ON warden.policy_decisions (tenant_id, job_id)
    WHERE job_id IS NOT NULL;
CREATE INDEX policy_decisions_by_run ON warden.policy_decisions (tenant_id, run_id, decision_id);

-- Decisions and activations are audit records, snapshots are content-addressed: none of
-- them ever changes once written (sql/triggers/append_only.sql).
REVOKE UPDATE, DELETE, TRUNCATE ON warden.policy_decisions, warden.policy_activations,
    warden.policy_snapshots FROM PUBLIC;

-- sql/schema/70_api_keys.sql
-- API keys: only an HMAC of each secret is stored; a key is granted roles and tenants.
CREATE TABLE warden.api_keys (
    -- the public half of a key (shown in lists and logs); the secret half is never stored
    key_id       text            NOT NULL PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),
    -- the principal the key acts as (recorded as actor, compared for self-approval)
    name         text            NOT NULL
        CONSTRAINT api_keys_name_unique UNIQUE
        CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    roles        warden.api_role[] NOT NULL CHECK (cardinality(roles) >= 1),
    tenants      text[]          NOT NULL CHECK (cardinality(tenants) >= 1),
    -- HMAC-SHA256(server secret, key secret), hex
    secret_hmac  text            NOT NULL CHECK (secret_hmac ~ '^[0-9a-f]{64}$'),
    created_by   text            NOT NULL,
    created_at   timestamptz     NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);

-- sql/functions/append_event.sql
-- Appends one event to a run's timeline and returns its seq: append_events with one event.
-- Callers must already hold any job/approval locks they need (lock order: jobs ->
-- approvals -> runs -> steps).
CREATE OR REPLACE FUNCTION warden.append_event(
    p_tenant text, p_run uuid, p_kind warden.timeline_kind, p_step text, p_job text,
    p_attempt integer, p_actor text, p_data jsonb
) RETURNS bigint LANGUAGE sql AS $$
    SELECT warden.append_events(p_tenant, p_run, jsonb_build_array(jsonb_build_object(
        'kind', p_kind, 'step_id', p_step, 'job_id', p_job, 'attempt', p_attempt,
        'actor', p_actor, 'data', coalesce(p_data, '{}'))))
$$;

-- sql/functions/append_events.sql
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

-- sql/functions/claim_jobs.sql
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

-- sql/functions/clock_timestamp.sql
-- warden.now()'s wall-clock twin, for timeline events: each event's `at` is the moment
-- it was written (several events of one transaction are ordered in time), on the same
-- shifted clock as everything it is compared with.
CREATE OR REPLACE FUNCTION warden.clock_timestamp() RETURNS timestamptz
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT clock_timestamp() + coalesce((SELECT c.shift FROM warden.clock c), interval '0')
$$;

-- sql/functions/complete_job.sql
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

-- sql/functions/complete_jobs.sql
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

-- sql/functions/end_attempt.sql
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

-- sql/functions/event_hash.sql
-- The chained hash of one timeline event. Times enter as epoch microseconds so the hash
-- does not depend on the session's TimeZone or DateStyle; jsonb's text form is canonical.
CREATE OR REPLACE FUNCTION warden.event_hash(
    prev_hash text, tenant_id text, run_id uuid, seq bigint, at timestamptz,
    kind warden.timeline_kind, step_id text, job_id text, attempt integer, actor text, data jsonb
) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(sha256(convert_to(concat_ws(E'\x1f',
        prev_hash, tenant_id, run_id::text, seq::text,
        (extract(epoch FROM at) * 1000000)::bigint::text,
        kind::text, coalesce(step_id, ''), coalesce(job_id, ''), coalesce(attempt::text, ''),
        coalesce(actor, ''), data::text), 'UTF8')), 'hex')
$$;

-- sql/functions/fail_job.sql
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

-- sql/functions/fence_outcome.sql
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

-- sql/functions/heartbeat_job.sql
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

-- sql/functions/lease_held.sql
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

-- sql/functions/now.sql
-- The clock of every comparison the database makes: lease expiry, backoff, deadlines,
-- approval expiry, claimability. The transaction's now(), moved forward by the shift in
-- warden.clock (sql/schema/01_clock.sql), which only tests write. STABLE, so a statement
-- reads it once.
CREATE OR REPLACE FUNCTION warden.now() RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT now() + coalesce((SELECT c.shift FROM warden.clock c), interval '0')
$$;

-- sql/functions/raise_fenced.sql
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

-- sql/functions/reap_expired_jobs.sql
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

-- sql/functions/refuse_change.sql
-- The trigger function of every append-only table (sql/triggers/append_only.sql): the
-- timeline, policy decisions and activations, and the content-addressed snapshots.
CREATE OR REPLACE FUNCTION warden.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'warden.% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'WD010';
END $$;

-- sql/functions/release_job.sql
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

-- sql/functions/verify_timeline.sql
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

-- sql/functions/wake_run.sql
-- Marks a run for the scheduler and wakes schedulers. The NOTIFY carries no payload:
-- Postgres folds identical notifications of one transaction into one, and the scheduler
-- finds its work through the runs_to_schedule index anyway (NOTIFY is only a hint).
CREATE OR REPLACE FUNCTION warden.wake_run(p_tenant text, p_run uuid) RETURNS void
LANGUAGE sql AS $$
    UPDATE warden.runs SET needs_scheduling = true
     WHERE tenant_id = p_tenant AND run_id = p_run AND NOT needs_scheduling;
    SELECT pg_notify('warden_scheduler', '');
$$;

-- sql/triggers/append_only.sql
-- Append-only tables refuse changes at the database, whoever asks (privileges refuse them
-- too: sql/schema/50_timeline.sql, 60_policy.sql). A superuser can still disable these;
-- docs/dba.md says what the hash chain then does and does not prove.
CREATE OR REPLACE TRIGGER timeline_no_update_delete BEFORE UPDATE OR DELETE ON warden.timeline
    FOR EACH ROW EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER timeline_no_truncate BEFORE TRUNCATE ON warden.timeline
    FOR EACH STATEMENT EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER policy_decisions_append_only
    BEFORE UPDATE OR DELETE ON warden.policy_decisions
    FOR EACH ROW EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER policy_activations_append_only
    BEFORE UPDATE OR DELETE ON warden.policy_activations
    FOR EACH ROW EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER policy_snapshots_immutable
    BEFORE UPDATE OR DELETE ON warden.policy_snapshots
    FOR EACH ROW EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER policy_append_only_no_truncate BEFORE TRUNCATE ON warden.policy_decisions
    FOR EACH STATEMENT EXECUTE FUNCTION warden.refuse_change();

"""

DOWNGRADE = r"""
DROP SCHEMA warden CASCADE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
