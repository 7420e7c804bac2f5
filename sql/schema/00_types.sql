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
CREATE TYPE warden.step_type AS ENUM ('job', 'approval', 'notify', 'sleep', 'wait_event',
    'workflow');
CREATE TYPE warden.approval_kind AS ENUM ('step', 'policy');
CREATE TYPE warden.timeline_kind AS ENUM (
    'run.created', 'run.started', 'run.waiting', 'run.resumed',
    'run.succeeded', 'run.failed', 'run.denied', 'run.cancelled', 'run.timed_out', 'run.rerun',
    'policy.decision', 'step.ready', 'step.skipped',
    'job.dispatched', 'job.claimed', 'job.checkpointed', 'job.succeeded', 'job.failed',
    'job.retry_scheduled', 'job.timed_out', 'job.cancelled',
    'approval.requested', 'approval.approved', 'approval.rejected', 'approval.expired',
    'approval.superseded',
    'notify.sent', 'reconciler.repaired',
    'step.condition', 'timer.started', 'timer.fired', 'wait.started', 'wait.matched',
    'wait.timed_out', 'step.failed',
    'foreach.expanded', 'foreach.ended', 'child.started', 'child.ended');
CREATE TYPE warden.policy_decision AS ENUM
    ('allow', 'deny', 'require_approval', 'allow_with_constraints');
CREATE TYPE warden.policy_stage AS ENUM ('submit', 'dispatch');
CREATE TYPE warden.api_role AS ENUM
    ('submitter', 'approver', 'operator', 'admin', 'worker', 'auditor');
CREATE TYPE warden.notification_status AS ENUM ('pending', 'delivering', 'delivered', 'failed');
