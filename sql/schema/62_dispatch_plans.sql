-- Dispatch plans (docs/design.md#dispatch-in-the-completion): a job step of a workflow
-- version that a worker's completion may dispatch itself, and what the tenant's policy
-- snapshot decides for it. The engine's dispatch gate records a plan
-- (engine/scheduling/plans.py) only where the step needs no Python to become a job — no
-- template in its input, no for_each, no `when`, no concurrency or rate gate — and the
-- snapshot's decision for it is allow whatever the input (no rule that could fire before
-- it looks at the input). warden.complete_jobs then dispatches the step in the
-- transaction whose completion made it ready, under the snapshot active then, recording
-- the decision as the gate would: one commit from a step's end to the next step's
-- claimable job, not a scheduler pass and a second commit.
--
-- Never changed: a snapshot and a workflow version are immutable, so the plan of a step
-- under a snapshot is too. A snapshot without plans (or a tenant without an active
-- snapshot: the process's configured default decides then, which SQL cannot see) leaves
-- every dispatch to the scheduler.
CREATE TABLE warden.dispatch_plans (
    tenant_id        text                   NOT NULL,
    workflow_id      text                   NOT NULL,
    workflow_version text                   NOT NULL,
    snapshot_hash    text                   NOT NULL,
    step_id          text                   NOT NULL,
    -- a plan can only allow, with no constraints: anything else is the scheduler's
    decision         warden.policy_decision NOT NULL DEFAULT 'allow'
                                            CONSTRAINT dispatch_plans_allow_only
                                            CHECK (decision = 'allow'),
    rule             text,                  -- NULL: the bundle's default decided
    reason           text                   NOT NULL,
    -- the job's input: NULL for the run's input (a step without `input:`), else the
    -- step's constant input
    input            jsonb                  CONSTRAINT dispatch_plans_input_object
                                            CHECK (jsonb_typeof(input) = 'object'),
    created_by       text                   NOT NULL,
    created_at       timestamptz            NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, workflow_id, workflow_version, snapshot_hash, step_id),
    FOREIGN KEY (tenant_id, workflow_id, workflow_version)
        REFERENCES warden.workflows (tenant_id, workflow_id, version),
    FOREIGN KEY (tenant_id, snapshot_hash)
        REFERENCES warden.policy_snapshots (tenant_id, snapshot_hash)
);
