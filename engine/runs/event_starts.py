"""Event-started runs (docs/workflows.md#event-started-runs): an event starts one run of
each workflow whose active (newest) version subscribes to its name in ``on_event``.

`run_pending` is one pass of the event-starts loop of `warden serve`, woken by the NOTIFY
warden.send_event sends when a subscribed event arrives (so events sent by the API, the
CLI and SQL clients alike start runs, and a send does not wait for them). Once per event
and workflow rests on two things, as for cron ticks: the run's idempotency key is derived
from the event id (``event:<id>``), so however many processes start it they get the same
run; and the (tenant, event, workflow) row of warden.event_starts has a unique key. The
subscriptions are locked for the pass (SKIP LOCKED), so usually only one process even
tries.
A run starts through the normal start path: the submit gate decides it like any other,
and a denied start is recorded (outcome denied), never tried again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from engine.core.errors import IdempotencyConflict, InvalidInput, NotFound, PolicyDenied
from engine.definitions.eventstarts import render_input
from engine.runs import lifecycle
from engine.runs.services import Services
from engine.store import event_starts as q
from engine.store import runs as runs_q
from engine.store.event_starts import EventStartRow, PendingStart

log = logging.getLogger(__name__)

STARTS_PER_PASS = 100


@dataclass(frozen=True)
class StartOutcome:
    tenant_id: str
    event_id: str
    workflow_id: str
    outcome: str  # started | denied | failed
    run_id: UUID | None
    error: str | None


def idempotency_key(event_id: str) -> str:
    return f"event:{event_id}"


def actor(pending: PendingStart) -> str:
    return f"event:{pending.event_name}/{pending.event_id}"


def event_ref(pending: PendingStart) -> dict[str, Any]:
    """What the run records of the event that started it (run.created's data)."""
    return {"id": pending.event_id, "name": pending.event_name, "key": pending.event_key,
            "received_at": pending.received_at.isoformat()}


async def run_pending(svc: Services, *, limit: int = STARTS_PER_PASS) -> list[StartOutcome]:
    """One pass: every (event, subscribing workflow) not handled yet, up to ``limit``."""
    outcomes: list[StartOutcome] = []
    async with svc.db.transaction() as conn:
        for pending in await q.lock_pending(conn, limit):
            outcome, run_id, error = await _start(svc, pending)
            recorded = await q.record(conn, pending, outcome=outcome, run_id=run_id,
                                      error=error)
            if recorded is not None:
                outcomes.append(StartOutcome(pending.tenant_id, pending.event_id,
                                             pending.workflow_id, outcome, run_id, error))
    return outcomes


async def _start(svc: Services, pending: PendingStart) -> tuple[str, UUID | None, str | None]:
    key = idempotency_key(pending.event_id)
    try:
        run_input = render_input(pending.input, event_id=pending.event_id,
                                 name=pending.event_name, key=pending.event_key,
                                 data=pending.event_data)
        started = await lifecycle.start(
            svc, tenant_id=pending.tenant_id, workflow_id=pending.workflow_id,
            input=run_input, created_by=actor(pending), idempotency_key=key,
            version=pending.workflow_version, started_by_event=event_ref(pending))
        return "started", started.run.run_id, None
    except PolicyDenied as exc:
        # the denied run is committed with its decisions: the event did start it
        return "denied", await _run_of(svc, pending, key), str(exc)
    except IdempotencyConflict:
        # the key started a run with another input (the subscription's input changed
        # between a crash and now): that run is the event's
        return "started", await _run_of(svc, pending, key), None
    except (InvalidInput, NotFound) as exc:
        # the event's data lacks what the input reads, or the input is not storable: no
        # run, and trying again would fail the same way
        log.info("event %s (%s) started no run of %s: %s", pending.event_id,
                 pending.tenant_id, pending.workflow_id, exc)
        return "failed", None, str(exc)


async def _run_of(svc: Services, pending: PendingStart, key: str) -> UUID:
    async with svc.db.connection() as conn:
        found = await runs_q.by_idempotency_key(conn, pending.tenant_id, pending.workflow_id,
                                                key)
    if found is None:
        raise NotFound(f"the run of {key!r} in workflow {pending.workflow_id!r} is gone")
    return found.run_id


async def of_run(svc: Services, tenant_id: str, run_id: UUID) -> EventStartRow | None:
    """The event that started a run, None for a run no event started."""
    async with svc.db.connection() as conn:
        return await q.of_run(conn, tenant_id, run_id)
