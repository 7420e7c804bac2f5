"""Errors a Warden caller can act on.

One root, subclasses by what the caller should do next::

    WardenError
    ├── ConfigError            a WARDEN_* setting is missing or malformed
    ├── DatabaseUnavailable    PostgreSQL cannot be reached; retry later
    ├── SchemaMismatch         the database is not migrated to this code's head
    ├── InvalidDefinition      a workflow definition breaks docs/workflows.md (carries problems)
    ├── InvalidInput           a request value is malformed (names the field)
    ├── NotFound               no such object for this tenant
    ├── Conflict               the request contradicts what is stored
    │   └── IdempotencyConflict  same Idempotency-Key, different body
    ├── Forbidden              this principal may not do this (e.g. approve its own run)
    ├── InvalidTransition      the object is not in the state the change requires
    ├── Busy                   another transaction holds what this one needs; retry shortly
    ├── LeaseLost              the worker's lease token no longer owns the job
    │   └── JobCancelled       the run was cancelled; stop working on the job
    └── PolicyDenied           a policy rule denied the work

SQL functions raise their own SQLSTATE codes (class ``WD``); ``engine.store.connection``
translates them to these classes in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.enums import Outcome


class WardenError(Exception):
    """Root of every error Warden raises on purpose."""


class ConfigError(WardenError):
    """A configuration value is missing or malformed; the message names the variable."""


class DatabaseUnavailable(WardenError):
    """PostgreSQL could not be reached or dropped the connection; safe to retry."""


class SchemaMismatch(WardenError):
    """The database schema is not at the revision this code expects."""


@dataclass(frozen=True)
class Problem:
    """One precise problem in a submitted document, located by a dotted path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidDefinition(WardenError):
    """A workflow definition failed validation; ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in problems))


class InvalidInput(WardenError):
    """A value given by a caller is malformed; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class NotFound(WardenError):
    """No such object (or it belongs to another tenant, which is the same to the caller)."""


class Conflict(WardenError):
    """The request contradicts stored state (duplicate, decided twice, hash mismatch)."""


class IdempotencyConflict(Conflict):
    """An Idempotency-Key was reused with a different request body."""


class Forbidden(WardenError):
    """The principal may not make this change (e.g. decide an approval of its own run)."""


class InvalidTransition(WardenError):
    """The object is not in a state that allows this change."""


class Busy(WardenError):
    """Another transaction holds a row this change needs right now (an approval being
    decided, a job being claimed); the change was not made and can be retried shortly."""


class LeaseLost(WardenError):
    """A worker's write was fenced: its lease no longer owns the job. ``outcome`` says why,
    in the vocabulary the batched path returns (engine.core.enums.Outcome)."""

    def __init__(self, message: str, outcome: Outcome = Outcome.LEASE_LOST) -> None:
        self.outcome = outcome
        super().__init__(message)


class JobCancelled(LeaseLost):
    """The job's run was cancelled; the worker must stop and must not complete it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, Outcome.CANCELLED)


class PolicyDenied(WardenError):
    """A policy decision denied the work."""

    def __init__(self, message: str, *, run_id: str | None = None, step_id: str | None = None,
                 rule: str | None = None, reason: str | None = None) -> None:
        self.run_id = run_id
        self.step_id = step_id
        self.rule = rule
        self.reason = reason
        super().__init__(message)
