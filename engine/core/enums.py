"""Python mirrors of the Postgres enums (docs/design.md#state-machines).

Each enum is compared with ``enum_range(NULL::warden.<type>)`` by a test, so the two
cannot drift. No bare status strings anywhere else in the code.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    PENDING = "pending"
    """Stored; the scheduler has not dispatched anything yet."""
    RUNNING = "running"
    """At least one step is in progress or ready."""
    WAITING = "waiting"
    """Paused at an approval, nothing else running."""
    SUCCEEDED = "succeeded"
    """Every step succeeded."""
    FAILED = "failed"
    """A step failed after its retries."""
    DENIED = "denied"
    """A policy denied a step or an approval was rejected."""
    CANCELLED = "cancelled"
    """Cancelled by an operator."""
    TIMED_OUT = "timed_out"
    """A step timed out after its retries, an approval expired, or the run deadline passed."""

    @property
    def is_final(self) -> bool:
        return self in _FINAL_RUN


_FINAL_RUN = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.DENIED,
                        RunStatus.CANCELLED, RunStatus.TIMED_OUT})


class StepStatus(StrEnum):
    PENDING = "pending"
    """Waiting for its dependencies."""
    RUNNING = "running"
    """An attempt is dispatched, running, or scheduled for retry."""
    WAITING = "waiting"
    """Waiting for a human decision (approval)."""
    SUCCEEDED = "succeeded"
    """Done; its output is stored."""
    FAILED = "failed"
    """Its last attempt failed and no retry is left."""
    DENIED = "denied"
    """Denied by policy or by a rejected approval."""
    CANCELLED = "cancelled"
    """The run was cancelled before the step finished."""
    TIMED_OUT = "timed_out"
    """Its last attempt or its approval timed out."""
    SKIPPED = "skipped"
    """An ancestor did not succeed."""

    @property
    def is_final(self) -> bool:
        return self in _FINAL_STEP


_FINAL_STEP = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.DENIED,
                         StepStatus.CANCELLED, StepStatus.TIMED_OUT, StepStatus.SKIPPED})


class JobStatus(StrEnum):
    BLOCKED = "blocked"
    """Held by policy until an approval is decided."""
    PENDING = "pending"
    """Claimable from ``available_at``."""
    RUNNING = "running"
    """Leased by a worker."""
    SUCCEEDED = "succeeded"
    """Completed by its lease holder."""
    FAILED = "failed"
    """Failed by its lease holder."""
    TIMED_OUT = "timed_out"
    """Its lease or deadline expired."""
    CANCELLED = "cancelled"
    """Its run was cancelled."""
    DENIED = "denied"
    """Denied by policy at dispatch."""


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    """Awaiting a decision."""
    APPROVED = "approved"
    """Approved; the gated work may run."""
    REJECTED = "rejected"
    """Rejected; the step and run end denied."""
    EXPIRED = "expired"
    """Nobody decided before ``expires_at``."""
    SUPERSEDED = "superseded"
    """Replaced by a newer approval after a policy change."""


class NotificationStatus(StrEnum):
    PENDING = "pending"
    """A webhook to deliver: the next attempt is due at ``next_attempt_at``."""
    DELIVERING = "delivering"
    """A notifier is posting it; its lease ends at ``next_attempt_at``."""
    DELIVERED = "delivered"
    """The webhook answered 2xx (or there is no webhook: the outbox row is the delivery)."""
    FAILED = "failed"
    """Given up: a permanent refusal (4xx) or every attempt used."""


class Outcome(StrEnum):
    """What a worker's write to a job came to: the one vocabulary of every write path.

    warden.complete_jobs returns it per job; the single-job functions raise the fenced
    ones as LeaseLost carrying it (SQLSTATE WD001 lease_lost, WD002 cancelled, WD003
    not_found); the SQL side writes it once, in warden.fence_outcome."""

    COMPLETED = "completed"
    """the lease held: the write landed"""
    LEASE_LOST = "lease_lost"
    """the lease expired, was reaped or taken over, or the job already ended: nothing
    was written"""
    CANCELLED = "cancelled"
    """the run was cancelled meanwhile: nothing was written; stop working on the job"""
    NOT_FOUND = "not_found"
    """no such job, or not one of the tenants and topics the worker is granted"""


class StepType(StrEnum):
    JOB = "job"
    """Work for a worker, claimed from ``warden.jobs``."""
    APPROVAL = "approval"
    """A human checkpoint."""
    NOTIFY = "notify"
    """A message to the outbox (and a webhook, if configured)."""
    SLEEP = "sleep"
    """A timer on the database clock (``duration_ms`` or ``until``)."""
    WAIT_EVENT = "wait_event"
    """Waits for an event of a name and key (``warden.events``)."""
    WORKFLOW = "workflow"
    """A child run of another workflow; the step takes the child's output."""


FINAL_JOB = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.TIMED_OUT,
                       JobStatus.CANCELLED, JobStatus.DENIED})


class Trigger(StrEnum):
    """When a step may start, given how its dependencies ended (docs/workflows.md)."""

    ALL_SUCCEEDED = "all_succeeded"
    """Every dependency succeeded; one that did not skips the step (the default)."""
    ANY_SUCCEEDED = "any_succeeded"
    """Every dependency is final and at least one succeeded (a join of branches)."""
    ALL_DONE = "all_done"
    """Every dependency is final, however it ended (clean-up, notify on failure)."""
