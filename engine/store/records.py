"""Frozen rows of the warden tables, as the named queries return them.

Full-row records mirror their table column for column (`SELECT *` / `RETURNING *`); a
test compares each with information_schema so a migration cannot drift from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from engine.core.enums import (
    ApprovalStatus,
    JobStatus,
    NotificationStatus,
    RunStatus,
    StepStatus,
    StepType,
)

RunKey = tuple[str, UUID]
"""(tenant_id, run_id): how set-based queries name several runs."""


def run_key_params(keys: Sequence[RunKey], prefix: str = "") -> dict[str, list[Any]]:
    """Parallel arrays for ``unnest(%(tenant_ids)s::text[], %(run_ids)s::uuid[])``."""
    return {f"{prefix}tenant_ids": [k[0] for k in keys], f"{prefix}run_ids": [k[1] for k in keys]}

@dataclass(frozen=True)
class WorkflowRow:
    tenant_id: str
    workflow_id: str
    version: str
    version_major: int
    version_minor: int
    version_patch: int
    version_pre: str | None
    name: str
    definition: dict[str, Any]
    digest: str
    source: str
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class RunRow:
    tenant_id: str
    run_id: UUID
    workflow_id: str
    workflow_version: str
    status: RunStatus
    input: Any
    output: Any
    error: Any
    idempotency_key: str | None
    request_digest: str
    rerun_of: UUID | None
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deadline_at: datetime | None
    needs_scheduling: bool
    timeline_seq: int
    timeline_hash: str
    # a child run of a `workflow` step (docs/workflows.md#sub-workflows); None otherwise
    parent_run_id: UUID | None = None
    parent_step_id: str | None = None
    parent_item_index: int | None = None
    parent_attempt: int | None = None
    pins: Any = None  # the child versions of its workflow steps (engine/runs/children.py)
    depth: int = 0
    priority: int = 5  # 0..9, lower first: orders the run's jobs before step priority
    # its place in the scheduler's flagging order (docs/design.md#scheduling-floors)
    flag_seq: int | None = None


@dataclass(frozen=True, slots=True)
class EndedRun:
    """A run a worker's completion ended, as the observer of ends takes it
    (runs_observe_ends): only what recording the end reads (metrics.run_ended,
    tracing.run_ended), so a serve observing thousands of ends a second decodes no
    inputs or outputs."""

    tenant_id: str
    run_id: UUID
    workflow_id: str
    workflow_version: str
    status: RunStatus
    created_by: str
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class StepRow:
    tenant_id: str
    run_id: UUID
    step_id: str
    type: StepType
    status: StepStatus
    depends_on: list[str]
    topic: str | None
    attempts: int
    max_attempts: int
    backoff_ms: int
    max_backoff_ms: int
    multiplier: float
    jitter: float
    timeout_ms: int | None
    priority: int
    retry_at: datetime | None
    output: Any
    error: Any
    started_at: datetime | None
    finished_at: datetime | None
    # sleep and wait_event steps (docs/workflows.md#control-flow)
    wake_at: datetime | None = None
    await_event: str | None = None
    await_key: str | None = None


@dataclass(frozen=True)
class JobRow:
    tenant_id: str
    job_id: str
    run_id: UUID
    step_id: str
    attempt: int
    topic: str
    status: JobStatus
    priority: int
    input: Any
    upstream: Any
    constraints: Any
    checkpoint: Any
    result: Any
    error: Any
    worker: str | None
    lease_token: UUID | None
    lease_expires_at: datetime | None
    timeout_ms: int | None
    deadline_at: datetime | None
    available_at: datetime
    policy_snapshot_hash: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    unclaimed_reported_at: datetime | None
    traceparent: str | None  # W3C, of the attempt's dispatch; None unless traces are on
    item_index: int | None = None  # the for_each item of this attempt; None: a plain step
    # flow control gates ('' = none), docs/workflows.md#concurrency-and-rate-limits
    concurrency_key: str = ""
    concurrency_limit: int | None = None
    rate_key: str = ""
    rate_limit: int | None = None
    rate_per_ms: int | None = None
    concurrency_stripe: int | None = None  # the stripe of its key's limit it holds
    lease_role: str | None = None  # the login role its lease was handed to (the fence's)


@dataclass(frozen=True)
class ItemRow:
    """One item of a for_each step (docs/workflows.md#for_each)."""

    tenant_id: str
    run_id: UUID
    step_id: str
    item_index: int
    status: StepStatus
    item: Any
    attempts: int
    max_attempts: int
    retry_at: datetime | None
    output: Any
    error: Any
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class ClaimedJob:
    """One row of warden.claim_jobs(), with its claim latency (sql/queries/jobs.sql)."""

    job_id: str
    run_id: UUID
    step_id: str
    attempt: int
    topic: str
    input: Any
    upstream: Any
    checkpoint: Any
    constraints: Any
    lease_token: UUID
    lease_expires_at: datetime
    tenant_id: str
    waited_s: float  # from available_at to this claim, database clock
    traceparent: str | None  # the parent of the worker's spans; None unless traces are on


@dataclass(frozen=True)
class ApprovalRow:
    tenant_id: str
    approval_id: UUID
    run_id: UUID
    step_id: str
    job_id: str | None
    kind: str
    status: ApprovalStatus
    policy_snapshot_hash: str | None
    job_hash: str | None
    requested_by: str
    requested_at: datetime
    expires_at: datetime | None
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None
    barred: list[str]  # who may never decide it: every starter of the run's rerun chain


@dataclass(frozen=True)
class NotificationRow:
    tenant_id: str
    notification_id: UUID
    run_id: UUID
    step_id: str
    message: str | None
    webhook: str | None
    payload: Any
    created_at: datetime
    delivered_at: datetime | None
    status: NotificationStatus
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    failed_at: datetime | None


@dataclass(frozen=True)
class TimelineEvent:
    tenant_id: str
    run_id: UUID
    seq: int
    at: datetime
    kind: str
    step_id: str | None
    job_id: str | None
    attempt: int | None
    actor: str | None
    data: Any
    prev_hash: str
    hash: str
    key_id: int
    # the run's created_at: the timeline's partition key (sql/schema/50_timeline.sql)
    run_created_at: datetime


@dataclass(frozen=True)
class PolicySnapshotRow:
    tenant_id: str
    snapshot_hash: str
    bundle: dict[str, Any]
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class PolicyActiveRow:
    tenant_id: str
    snapshot_hash: str
    activated_by: str
    activated_at: datetime


@dataclass(frozen=True)
class PolicyActivationRow:
    tenant_id: str
    activation_id: int
    snapshot_hash: str
    previous_hash: str | None
    activated_by: str
    activated_at: datetime


@dataclass(frozen=True)
class PolicyDecisionRow:
    tenant_id: str
    decision_id: int
    stage: str
    snapshot_hash: str | None
    rule: str | None
    decision: str
    reason: str
    constraints: Any
    run_id: UUID
    step_id: str
    job_id: str | None
    at: datetime
    # the run's created_at: the partition key (sql/schema/60_policy.sql)
    run_created_at: datetime


@dataclass(frozen=True)
class ApiKeyRow:
    key_id: str
    name: str
    roles: list[str]
    tenants: list[str]
    secret_hmac: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class WorkerGrantRow:
    role_name: str
    tenant_id: str
    topic_glob: str
    topic_like: str
    granted_by: str
    granted_at: datetime


@dataclass(frozen=True)
class WorkerRow:
    """A row of warden.workers, plus ``state`` (live, dead or stopped) derived by the query."""

    worker_id: UUID
    role_name: str
    name: str
    host: str
    pid: int
    topics: list[str]
    concurrency: int
    version: str
    heartbeat_ms: int
    jobs_in_flight: int
    started_at: datetime
    last_seen_at: datetime
    stopped_at: datetime | None
    state: str


@dataclass(frozen=True)
class QueueRow:
    """One topic's queue: depth, age, claim rate and the live workers polling it."""

    topic: str
    depth: int
    ready: int
    oldest_age_s: float | None
    running: int
    claimed_last_minute: int
    live_workers: int
    workers: list[str]


@dataclass(frozen=True)
class EventRow:
    """An event of warden.events (docs/workflows.md#events)."""

    tenant_id: str
    event_id: str
    name: str
    key: str
    data: Any
    digest: str
    sent_by: str
    received_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class SentEvent:
    """What warden.send_event returned: the stored event and what became of this send."""

    event_id: str
    name: str
    key: str
    data: Any
    sent_by: str
    received_at: datetime
    expires_at: datetime
    outcome: str  # created | duplicate | conflict


@dataclass(frozen=True)
class ScheduleRow:
    """A row of warden.schedules (docs/workflows.md#schedules)."""

    tenant_id: str
    workflow_id: str
    name: str
    workflow_version: str
    cron: str
    timezone: str
    input: Any
    overlap: str
    catch_up: str
    active: bool
    paused: bool
    paused_by: str | None
    paused_at: datetime | None
    next_tick: datetime | None
    last_tick: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class ScheduleTickRow:
    tenant_id: str
    workflow_id: str
    schedule_name: str
    tick: datetime
    outcome: str
    run_id: UUID | None
    created_at: datetime
