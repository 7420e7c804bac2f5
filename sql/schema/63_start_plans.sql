-- Start plans (docs/design.md#starts-in-one-call): what starting a run of a workflow
-- version under a policy snapshot writes, where none of it needs Python, so that
-- warden.start_planned_run can start the run, judge it and dispatch its first steps in
-- one call and one transaction. The engine writes a plan (engine/scheduling/plans.py)
-- only where:
-- * every job step's submit decision under the snapshot is allow, with no constraints,
--   whatever the run's input (no rule that could fire before it looks at the input);
-- * every root step is a job step that a dispatch plan could carry (no template in its
--   input, no for_each, no `when`, no concurrency or rate gate), also allowed whatever
--   the input;
-- * the version has no workflow step (a start pins the child versions it finds then).
-- Anything else (a root approval, a deny or a constraint anywhere, a tenant with no
-- active snapshot) starts through the engine's Python path, which writes the same rows.
--
-- Never changed: a snapshot and a workflow version are immutable, so their plan is too.
CREATE TABLE warden.start_plans (
    tenant_id        text        NOT NULL,
    workflow_id      text        NOT NULL,
    workflow_version text        NOT NULL,
    snapshot_hash    text        NOT NULL,
    -- the workflow's run timeout (runs.deadline_at = created_at + this); NULL: none
    timeout_ms       bigint      CONSTRAINT start_plans_timeout_positive CHECK (timeout_ms >= 1),
    -- every step row as warden.steps takes it, in the definition's topological order:
    -- [{step_id, type, depends_on, topic, max_attempts, backoff_ms, max_backoff_ms,
    --   multiplier, jitter, timeout_ms, priority}]
    steps            jsonb       NOT NULL CONSTRAINT start_plans_steps_array
                                 CHECK (jsonb_typeof(steps) = 'array'),
    -- the submit decision of every job step, in that order: [{step_id, rule, reason}],
    -- each one allow with no constraints (rule null: the bundle's default decided)
    submits          jsonb       NOT NULL CONSTRAINT start_plans_submits_array
                                 CHECK (jsonb_typeof(submits) = 'array'),
    -- the root steps the start dispatches, in the scheduler's order:
    -- [{step_id, topic, priority, timeout_ms, input, rule, reason}], input null for the
    -- run's input, else the step's constant input; each dispatch decision is allow
    roots            jsonb       NOT NULL CONSTRAINT start_plans_roots_array
                                 CHECK (jsonb_typeof(roots) = 'array'
                                        AND jsonb_array_length(roots) >= 1),
    created_by       text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, workflow_id, workflow_version, snapshot_hash),
    FOREIGN KEY (tenant_id, workflow_id, workflow_version)
        REFERENCES warden.workflows (tenant_id, workflow_id, version),
    FOREIGN KEY (tenant_id, snapshot_hash)
        REFERENCES warden.policy_snapshots (tenant_id, snapshot_hash)
);
