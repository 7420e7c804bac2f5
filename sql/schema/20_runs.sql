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

-- The order runs are flagged for the scheduler in (runs.flag_seq, docs/design.md#scheduling-floors).
CREATE SEQUENCE warden.runs_flag_seq;

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
    -- a child run (a `workflow` step, docs/workflows.md#sub-workflows): the parent's run,
    -- step, for_each item (NULL for a plain step) and the step's (or item's) attempt that
    -- started it. In the parent's tenant (the foreign key), and one child per attempt
    -- (runs_one_child_per_attempt): two schedulers can never start the same child twice.
    parent_run_id     uuid,
    parent_step_id    text,
    parent_item_index integer,
    parent_attempt    integer,
    -- the child workflow versions of its `workflow` steps, resolved when the root run
    -- started: {step_id: {"workflow", "version", "pins"}} (engine/runs/children.py)
    pins              jsonb             NOT NULL DEFAULT '{}',
    -- 0 for a run started by a caller; a child is its parent's depth + 1
    depth             integer           NOT NULL DEFAULT 0 CHECK (depth >= 0),
    -- the run's priority (0..9, lower first), given at start: it orders the run's jobs
    -- before the step's own priority (docs/workflows.md#priority)
    priority          smallint          NOT NULL DEFAULT 5
                                        CONSTRAINT runs_priority_range CHECK (priority BETWEEN 0 AND 9),
    -- when the run was last flagged (needs_scheduling set), in flagging order: a new run
    -- draws it at insert, a flag set later draws a new one (sql/triggers/runs.sql); the
    -- scheduler takes flagged runs in this order from its floor
    -- (docs/design.md#scheduling-floors)
    flag_seq          bigint            DEFAULT nextval('warden.runs_flag_seq'),
    PRIMARY KEY (tenant_id, run_id),
    FOREIGN KEY (tenant_id, workflow_id, workflow_version)
        REFERENCES warden.workflows (tenant_id, workflow_id, version),
    CONSTRAINT runs_idempotency UNIQUE (tenant_id, workflow_id, idempotency_key),
    -- what the partitioned audit tables' rows point at: created_at is their partition key
    -- (sql/schema/50_timeline.sql); no role but the owner may change it
    CONSTRAINT runs_partition_key UNIQUE (tenant_id, run_id, created_at),
    CONSTRAINT runs_finished_iff_final CHECK (
        (finished_at IS NOT NULL) =
        (status IN ('succeeded', 'failed', 'denied', 'cancelled', 'timed_out'))),
    CONSTRAINT runs_idempotency_key_length CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    CONSTRAINT runs_parent FOREIGN KEY (tenant_id, parent_run_id)
        REFERENCES warden.runs (tenant_id, run_id),
    CONSTRAINT runs_parent_complete CHECK (
        (parent_run_id IS NULL) = (parent_step_id IS NULL)
        AND (parent_run_id IS NULL) = (parent_attempt IS NULL)
        AND (parent_run_id IS NULL) = (depth = 0)),
    CONSTRAINT runs_flagged_in_order CHECK (NOT needs_scheduling OR flag_seq IS NOT NULL)
)
-- Room on each page for a run's next versions: every claim and completion moves the
-- timeline head (timeline_seq, timeline_hash, in no index), and that update is HOT (no
-- entry in the nine indexes) only when the new version fits on the row's page. Packed
-- pages made about a quarter of those updates write every index (bench/README.md).
WITH (fillfactor = 70);
CREATE UNIQUE INDEX runs_one_child_per_attempt ON warden.runs
    (tenant_id, parent_run_id, parent_step_id, coalesce(parent_item_index, -1), parent_attempt)
    WHERE parent_run_id IS NOT NULL;
ALTER SEQUENCE warden.runs_flag_seq OWNED BY warden.runs.flag_seq;
-- The scheduler's work queue, in flagging order: tiny, because the flag is cleared right
-- after each pass; and while an old snapshot keeps the entries of cleared flags, they lie
-- before the scheduler's floor, where it never walks (docs/design.md#scheduling-floors).
CREATE INDEX runs_to_schedule ON warden.runs (flag_seq) WHERE needs_scheduling;
CREATE INDEX runs_by_created ON warden.runs (tenant_id, created_at DESC, run_id DESC);
-- Also how the reconciler's sweeps find the open runs of each tenant
-- (sql/queries/reconciler.sql, docs/design.md#sweeps).
CREATE INDEX runs_by_status ON warden.runs (tenant_id, status, created_at DESC);
CREATE INDEX runs_open_deadline ON warden.runs (deadline_at)
    WHERE deadline_at IS NOT NULL AND finished_at IS NULL;

-- The ends a worker's completion wrote (warden.complete_jobs) and no serve has observed
-- yet: a serve's observer takes them (runs_observe_ends), records each end once (metrics,
-- traces: docs/deployment.md) and deletes its row. A queue of its own, not a flag on the
-- run: clearing a flag was one more version of the run row per run, with an entry in
-- each of its indexes (docs/design.md#ends-observed-apart). By end time, so that the
-- observer looks back a few seconds only, past the rows an old snapshot keeps
-- (docs/design.md#lookbacks). A run deleted by retention takes its row with it.
CREATE TABLE warden.run_ends (
    tenant_id    text        NOT NULL,
    run_id       uuid        NOT NULL,
    finished_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, run_id),
    FOREIGN KEY (tenant_id, run_id) REFERENCES warden.runs (tenant_id, run_id)
        ON DELETE CASCADE
);
CREATE INDEX run_ends_by_time ON warden.run_ends (finished_at);

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
    -- a waiting sleep step's fire time, or a waiting wait_event step's timeout; the reaper
    -- flags the run when it passes (steps_wake_due), the scheduler moves the step
    wake_at         timestamptz,
    -- what a waiting wait_event step waits for (warden.events name and rendered key)
    await_event     text,
    await_key       text,
    PRIMARY KEY (tenant_id, run_id, step_id),
    FOREIGN KEY (tenant_id, run_id) REFERENCES warden.runs (tenant_id, run_id),
    CONSTRAINT steps_finished_iff_final CHECK (
        (finished_at IS NOT NULL) =
        (status IN ('succeeded', 'failed', 'denied', 'cancelled', 'timed_out', 'skipped'))),
    CONSTRAINT steps_topic_iff_job CHECK ((topic IS NOT NULL) = (type = 'job')),
    CONSTRAINT steps_retry_only_while_running CHECK (retry_at IS NULL OR status = 'running')
);

-- Timers and wait timeouts coming due: only waiting steps that have one.
CREATE INDEX steps_wake ON warden.steps (wake_at) WHERE status = 'waiting' AND wake_at IS NOT NULL;
-- warden.send_event's "who waits for this (name, key)".
CREATE INDEX steps_awaiting ON warden.steps (tenant_id, await_event, await_key)
    WHERE status = 'waiting' AND await_event IS NOT NULL;
-- The items of a for_each step (docs/workflows.md#for_each): one row per element of the
-- list the step iterates over, each with its own attempts, retries and outcome. Written
-- by the scheduler (engine/scheduling/fanout.py) and, for the outcome of an item's job,
-- by the job protocol (complete_jobs, end_attempt) exactly as for a plain step.
CREATE TABLE warden.step_items (
    tenant_id       text               NOT NULL,
    run_id          uuid               NOT NULL,
    step_id         text               NOT NULL,
    item_index      integer            NOT NULL CHECK (item_index >= 0),
    status          warden.step_status NOT NULL DEFAULT 'pending',
    -- the list element: ${item} in the step's input templates
    item            jsonb,
    attempts        integer            NOT NULL DEFAULT 0,
    max_attempts    integer            NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
    -- when set, the scheduler dispatches attempt (attempts + 1), claimable from this time
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
    -- the W3C traceparent of the attempt's dispatch, set by the scheduler when traces are
    -- on (docs/deployment.md#traces): a worker's spans of this attempt are its children
    traceparent           text              CONSTRAINT jobs_traceparent_format CHECK (
        traceparent ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'),
    -- the for_each item this attempt belongs to; NULL for a plain step's attempt
    item_index            integer,
    -- Flow control (docs/workflows.md#concurrency-and-rate-limits), evaluated at dispatch
    -- from the step's concurrency/rate_limit or the policy's: at most concurrency_limit
    -- running jobs of the tenant with this key, at most rate_limit claims per rate_per_ms.
    -- '' = no gate: NOT NULL so the claim's loose scan over (tenant, keys) can compare rows.
    concurrency_key       text              NOT NULL DEFAULT '',
    concurrency_limit     integer,
    rate_key              text              NOT NULL DEFAULT '',
    rate_limit            integer,
    rate_per_ms           integer,
    -- the stripe of its key's limit a running gated job holds (warden.claim_jobs)
    concurrency_stripe    smallint,
    -- the login role (session_user) the claim handed the lease to: the fence lets only
    -- it write to the job (warden.lease_held_at), and taking its grant back ends the lease
    -- (warden.end_ungranted_leases). NULL: never claimed, or claimed before migration 0041
    lease_role            text,
    CONSTRAINT jobs_concurrency_gate CHECK (CASE WHEN concurrency_key = ''
        THEN concurrency_limit IS NULL ELSE concurrency_limit >= 1 END),
    CONSTRAINT jobs_rate_gate CHECK (CASE WHEN rate_key = ''
        THEN rate_limit IS NULL AND rate_per_ms IS NULL
        ELSE rate_limit >= 1 AND rate_per_ms >= 1 END),
    PRIMARY KEY (tenant_id, job_id),
    CONSTRAINT jobs_one_row_per_attempt UNIQUE NULLS NOT DISTINCT
        (tenant_id, run_id, step_id, item_index, attempt),
    FOREIGN KEY (tenant_id, run_id, step_id) REFERENCES warden.steps (tenant_id, run_id, step_id),
    CONSTRAINT jobs_of_item FOREIGN KEY (tenant_id, run_id, step_id, item_index)
        REFERENCES warden.step_items (tenant_id, run_id, step_id, item_index),
    -- run_id:step_id@attempt, or run_id:step_id[item_index]@attempt for a for_each item
    CONSTRAINT jobs_id_format CHECK (job_id = run_id::text || ':' || step_id
        || coalesce('[' || item_index || ']', '') || '@' || attempt),
    CONSTRAINT jobs_running_has_lease CHECK (status <> 'running' OR (
        lease_token IS NOT NULL AND lease_expires_at IS NOT NULL
        AND worker IS NOT NULL AND started_at IS NOT NULL)),
    CONSTRAINT jobs_finished_iff_final CHECK (
        (finished_at IS NOT NULL) =
        (status IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'denied')))
);
-- The claim index: only claimable rows, in claim order within each lane (a tenant and
-- its gate keys). Kept small because a job leaves it the moment it is claimed.
-- warden.claim_jobs skips from lane to lane through it (a loose index scan), then walks
-- each open lane in (priority, available_at) order; a test checks the plan.
CREATE INDEX jobs_claimable ON warden.jobs
    (topic, tenant_id, concurrency_key, rate_key, priority, available_at)
    WHERE status = 'pending';
-- How many jobs of a (tenant, concurrency key) are running, per stripe of its limit: the
-- claim counts at most a stripe's share of `limit` entries here per stripe it holds.
CREATE INDEX jobs_running_by_key ON warden.jobs (tenant_id, concurrency_key, concurrency_stripe)
    WHERE status = 'running' AND concurrency_key <> '';
-- Claims of a (tenant, rate key) in the last per_ms: every attempt is its own row and
-- keeps its started_at, so the rows are the claim log.
CREATE INDEX jobs_claims_by_rate_key ON warden.jobs (tenant_id, rate_key, started_at)
    WHERE rate_key <> '' AND started_at IS NOT NULL;
-- The reaper's index: running jobs by lease expiry.
CREATE INDEX jobs_running_lease ON warden.jobs (lease_expires_at) WHERE status = 'running';
-- The reconciler's index: claimable jobs not yet reported unclaimed, by when they became
-- claimable. It looks back a window behind the dispatch timeout on most passes
-- (docs/design.md#lookbacks); through jobs_claimable, whose last column this is, every
-- pass walked every entry an old snapshot kept, for seconds (bench/README.md, session 16).
CREATE INDEX jobs_unclaimed_by_available ON warden.jobs (available_at)
    WHERE status = 'pending' AND unclaimed_reported_at IS NULL;
-- Worker functions address a job by its id alone (workers are tenant-agnostic).
CREATE INDEX jobs_by_job_id ON warden.jobs (job_id);
CREATE INDEX jobs_by_status_topic ON warden.jobs (tenant_id, status, topic, created_at DESC);
-- The claim rate per topic (claims in the last minute) reads only recent claims.
CREATE INDEX jobs_by_started ON warden.jobs (started_at, topic) WHERE started_at IS NOT NULL;
-- Unclaimed jobs (pending, or blocked for a policy approval) per run: the scheduler's
-- check for jobs dispatched under a policy snapshot that is no longer active.
CREATE INDEX jobs_awaiting_claim ON warden.jobs (tenant_id, run_id)
    WHERE status IN ('pending', 'blocked');
