"""The long-lived things every engine operation needs, built once per process."""

from __future__ import annotations

from dataclasses import dataclass

from engine.definitions.workflows import DefinitionCache
from engine.governance.decisions import Policies
from engine.governance.policy import Verdict
from engine.store import Database

DEFAULT_APPROVAL_EXPIRES_MS = 7 * 24 * 3600 * 1000
DEFAULT_EVENT_KEEP_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class Services:
    db: Database
    definitions: DefinitionCache
    policies: Policies
    approval_expires_ms: int = DEFAULT_APPROVAL_EXPIRES_MS
    # WARDEN_EVENT_KEEP_MS (engine/runs/events.py)
    event_keep_ms: int = DEFAULT_EVENT_KEEP_MS

    @classmethod
    def create(cls, db: Database, *, policy_default: Verdict = Verdict.DENY,
               approval_expires_ms: int = DEFAULT_APPROVAL_EXPIRES_MS,
               event_keep_ms: int = DEFAULT_EVENT_KEEP_MS) -> Services:
        return cls(db, DefinitionCache(), Policies(policy_default), approval_expires_ms,
                   event_keep_ms)
