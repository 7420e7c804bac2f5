"""Event-started runs (docs/workflows.md#event-started-runs): once per event and
workflow, through the submit gate, across serve passes racing, tenants apart; bad
`on_event` fields refused precisely."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engine.core.errors import InvalidDefinition
from engine.definitions.model import WorkflowDef, parse_workflow
from engine.governance.policy import Verdict
from engine.runs import anchors, event_starts, events, lifecycle, retention, views
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from engine.store import event_starts as event_starts_q
from engine.store import retention as retention_q
from engine.store.scope import ACROSS_TENANTS, scoped
from tests import support
from tests.roles import LoginRoles, as_role

pytestmark = pytest.mark.anyio


def subscriber(workflow_id: str, name: str = "incident.opened", version: str = "1.0.0",
               input_doc: str = "{incident: '${event.data.id}', key: '${event.key}', "
                                "from: '${event.id}', sev: '${event.data.severity}'}") -> str:
    return f"""
id: {workflow_id}
name: {workflow_id}
version: {version}
on_event:
  - name: {name}
    input: {input_doc}
steps:
  work: {{type: job, topic: t.{workflow_id}}}
"""


async def _send(svc: Services, event_id: str, name: str = "incident.opened",
                data: Any = None, tenant: str = "default", key: str = "k-1") -> None:
    await events.send(svc, tenant_id=tenant, event_id=event_id, name=name, key=key,
                      data={"id": "INC-7", "severity": 2} if data is None else data,
                      sent_by="test")


async def _runs(db: Database) -> list[tuple[str, str, str, Any]]:
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT tenant_id, workflow_id, idempotency_key, input FROM warden.runs "
            "ORDER BY tenant_id, workflow_id, idempotency_key")
        return [(r[0], r[1], r[2], r[3]) for r in await cur.fetchall()]


async def _ledger(db: Database) -> list[tuple[str, str, str, str]]:
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT tenant_id, event_id, workflow_id, outcome FROM warden.event_starts "
            "ORDER BY tenant_id, event_id, workflow_id")
        return [(r[0], r[1], r[2], r[3]) for r in await cur.fetchall()]


async def test_an_event_posted_twice_starts_one_run_per_subscribing_workflow(
        svc: Services, db: Database) -> None:
    await support.store(db, subscriber("triage"))
    await support.store(db, subscriber("page-oncall"))
    await support.store(db, subscriber("other", name="incident.closed"))
    await _send(svc, "evt-1")
    await _send(svc, "evt-1")  # the same event again: a duplicate
    first = await event_starts.run_pending(svc)
    assert sorted((o.workflow_id, o.outcome) for o in first) == [
        ("page-oncall", "started"), ("triage", "started")]
    await _send(svc, "evt-1")  # after it started its runs: still nothing new
    assert await event_starts.run_pending(svc) == []
    runs = await _runs(db)
    assert [(r[1], r[2]) for r in runs] == [("page-oncall", "event:evt-1"),
                                            ("triage", "event:evt-1")]
    # the input rendered from the event, typed values kept
    assert runs[1][3] == {"incident": "INC-7", "key": "k-1", "from": "evt-1", "sev": 2}
    # the run records the event that started it
    run_id = first[0].run_id
    assert run_id is not None
    detail = await support.detail(svc, run_id)
    assert detail.run.created_by == "event:incident.opened/evt-1"
    [created] = [e for e in await support.events(db, run_id) if e.kind == "run.created"]
    assert created.data["started_by_event"]["id"] == "evt-1"
    assert created.data["started_by_event"]["key"] == "k-1"
    doc = views.run_detail(await lifecycle.detail(svc, "default", run_id))
    assert doc["started_by_event"] == {"event_id": "evt-1", "name": "incident.opened",
                                       "key": "k-1",
                                       "started_at": doc["started_by_event"]["started_at"]}
    assert doc["started_by_event"]["started_at"] is not None


async def test_a_name_nobody_subscribes_to_starts_nothing(svc: Services, db: Database) -> None:
    await support.store(db, subscriber("triage"))
    await _send(svc, "evt-x", name="incident.resolved")
    assert await event_starts.run_pending(svc) == []
    assert await _runs(db) == [] and await _ledger(db) == []


async def test_events_before_the_subscription_and_of_old_versions_start_nothing(
        svc: Services, db: Database) -> None:
    await _send(svc, "evt-early")
    await support.store(db, subscriber("triage"))
    assert await event_starts.run_pending(svc) == []
    # the newest version is the active one: 2.0.0 no longer subscribes
    await support.store(db, subscriber("triage", version="2.0.0", name="incident.closed"))
    await _send(svc, "evt-2")
    assert await event_starts.run_pending(svc) == []
    # a backport (an older version stored later) changes nothing either
    await support.store(db, subscriber("triage", version="1.5.0"))
    await _send(svc, "evt-3")
    assert await event_starts.run_pending(svc) == []
    await _send(svc, "evt-4", name="incident.closed")
    [started] = await event_starts.run_pending(svc)
    assert started.outcome == "started"
    detail = await support.detail(svc, started.run_id)  # type: ignore[arg-type]
    assert detail.run.workflow_version == "2.0.0"


async def test_a_submit_gate_deny_is_recorded_once_and_not_retried(db: Database) -> None:
    denying = Services.create(db, policy_default=Verdict.DENY)
    await support.store(db, subscriber("triage"))
    await _send(denying, "evt-d")
    [outcome] = await event_starts.run_pending(denying)
    assert outcome.outcome == "denied" and outcome.run_id is not None
    assert await event_starts.run_pending(denying) == []
    assert await _ledger(db) == [("default", "evt-d", "triage", "denied")]
    [(_, _, key, _)] = await _runs(db)
    assert key == "event:evt-d"
    async with db.connection() as conn:
        cur = await conn.execute("SELECT status::text FROM warden.runs")
        assert await cur.fetchone() == ("denied",)


async def test_data_missing_what_the_input_reads_fails_the_start_once(
        svc: Services, db: Database) -> None:
    await support.store(db, subscriber("triage"))
    await _send(svc, "evt-bad", data={"severity": 1})  # no data.id
    [outcome] = await event_starts.run_pending(svc)
    assert outcome.outcome == "failed" and outcome.run_id is None
    assert outcome.error is not None and "${event.data.id}" in outcome.error
    assert await event_starts.run_pending(svc) == []
    assert await _runs(db) == []


async def test_two_serve_passes_racing_start_each_run_once(svc: Services, db: Database) -> None:
    await support.store(db, subscriber("triage"))
    await support.store(db, subscriber("page-oncall"))
    for n in range(20):
        await _send(svc, f"evt-{n}")
    other = Services.create(db, policy_default=Verdict.ALLOW)
    first, second = await asyncio.gather(event_starts.run_pending(svc, limit=7),
                                         event_starts.run_pending(other, limit=7))
    rest: list[event_starts.StartOutcome] = []
    while batch := await event_starts.run_pending(svc, limit=7):
        rest.extend(batch)
    handled = [(o.event_id, o.workflow_id) for o in (*first, *second, *rest)]
    assert len(handled) == len(set(handled)) == 40
    assert len(await _runs(db)) == 40


async def test_a_lost_ledger_row_does_not_start_a_second_run(svc: Services,
                                                             db: Database) -> None:
    """A serve that crashed after the start but before recording it: the idempotency key
    hands the next pass the same run."""
    await support.store(db, subscriber("triage"))
    await _send(svc, "evt-c")
    [first] = await event_starts.run_pending(svc)
    async with db.connection() as conn:
        await conn.execute("DELETE FROM warden.event_starts")
    [again] = await event_starts.run_pending(svc)
    assert again.run_id == first.run_id
    assert len(await _runs(db)) == 1


async def test_another_tenants_event_starts_nothing_here(svc: Services, db: Database) -> None:
    await support.store(db, subscriber("triage"))
    await support.store(db, subscriber("triage"), tenant="acme")
    await _send(svc, "evt-t", tenant="acme")
    [outcome] = await event_starts.run_pending(svc)
    assert outcome.tenant_id == "acme"
    assert [r[0] for r in await _runs(db)] == ["acme"]
    # the same event id in the other tenant is another event
    await _send(svc, "evt-t")
    [outcome] = await event_starts.run_pending(svc)
    assert outcome.tenant_id == "default"


async def test_the_ledger_does_not_hold_back_retention(
        svc: Services, db: Database, scheduler: Scheduler, tmp_path: Path) -> None:
    """warden.retention_drop deletes an archived run's rows; the ledger row naming the
    run stays (no foreign key), so the event still counts as handled."""
    await support.store(db, subscriber("triage"))
    await _send(svc, "evt-r")
    [outcome] = await event_starts.run_pending(svc)
    await support.settle(scheduler)
    [job] = await support.claim(db, ["t.triage"])
    await support.complete(db, job, {"done": True})
    await support.settle(scheduler)
    await support.advance_clock(db, 200 * 86400)
    async with db.connection() as conn:
        cutoff = await retention_q.now(conn) - timedelta(days=90)
    archived = [o for o in await retention.retain(
        db, cutoff=cutoff, archive_dir=tmp_path / "archive", anchor_dir=tmp_path / "anchors",
        key=anchors.anchor_key(b"s" * 40), by="test", dry_run=False)
        if o.action == "archived"]
    assert [o.runs for o in archived] == [1]
    assert await _runs(db) == []
    async with db.connection() as conn:
        rows = await event_starts_q.of_event(conn, "default", "evt-r")
    assert [(r.run_id, r.outcome) for r in rows] == [(outcome.run_id, "started")]
    assert await event_starts.run_pending(svc) == []


@pytest.mark.parametrize(("on_event", "path", "words"), [
    ("on_event: {name: x}", "on_event", "must be a list"),
    ("on_event: [{name: 'bad name!'}]", "on_event[0].name", "event name"),
    ("on_event: [{input: {}}]", "on_event[0].name", "missing"),
    ("on_event: [{name: a.b}, {name: a.b}]", "on_event[1].name", "duplicate event name"),
    ("on_event: [{name: a.b, input: {x: '${input.y}'}}]", "on_event[0].input.x",
     "unknown template root 'input'"),
    ("on_event: [{name: a.b, input: {x: ['${event.key.z}']}}]", "on_event[0].input.x[0]",
     "has no fields"),
    ("on_event: [{name: a.b, input: {x: '${event.data'}}]", "on_event[0].input.x",
     "unterminated"),
    ("on_event: [{name: a.b, when: x}]", "on_event[0]", "when"),
])
def test_bad_on_event_fields_are_refused_naming_the_field(on_event: str, path: str,
                                                          words: str) -> None:
    source = f"id: w\nname: w\nversion: 1.0.0\n{on_event}\nsteps:\n  a: {{type: job, topic: t}}\n"
    with pytest.raises(InvalidDefinition) as caught:
        parse_workflow(source)
    problems = [(p.path, p.message) for p in caught.value.problems]
    assert any(p.startswith(path) and words in m for p, m in problems), problems


def test_to_doc_is_unchanged_without_on_event_and_round_trips_with_it() -> None:
    plain = parse_workflow("id: w\nname: w\nversion: 1.0.0\nsteps:\n  a: {type: job, topic: t}\n")
    assert "on_event" not in plain.to_doc()
    subscribed = parse_workflow(subscriber("w"))
    doc = subscribed.to_doc()
    assert doc["on_event"] == [{"name": "incident.opened", "input": {
        "incident": "${event.data.id}", "key": "${event.key}", "from": "${event.id}",
        "sev": "${event.data.severity}"}}]
    assert WorkflowDef.from_doc(doc).to_doc() == doc


async def test_the_engine_role_sees_and_writes_its_scope_only_and_never_edits_the_ledger(
        svc: Services, db: Database, db_url: str, login_roles: LoginRoles) -> None:
    await support.store(db, subscriber("triage"))
    await support.store(db, subscriber("triage"), tenant="acme")
    await _send(svc, "evt-a", tenant="acme")
    await _send(svc, "evt-d")
    assert len(await event_starts.run_pending(svc)) == 2
    with psycopg.connect(as_role(db_url, login_roles.engine), autocommit=True) as conn:
        conn.execute("SELECT set_config('warden.tenant', 'acme', false)")
        for table in ("event_triggers", "event_starts"):
            seen = {r[0] for r in conn.execute(f"SELECT tenant_id FROM warden.{table}")}
            assert seen == {"acme"}, table
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # WITH CHECK
            conn.execute("INSERT INTO warden.event_starts (tenant_id, event_id, workflow_id, "
                         "event_name, outcome, error) VALUES ('default', 'evt-z', 'triage', "
                         "'incident.opened', 'failed', 'forged')")
        for statement in ("UPDATE warden.event_starts SET outcome = 'failed', run_id = NULL",
                          "DELETE FROM warden.event_starts",
                          "DELETE FROM warden.event_triggers"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    assert len(await _ledger(db)) == 2


async def test_the_loop_runs_on_the_engine_roles_privileges(
        db: Database, db_url: str, login_roles: LoginRoles) -> None:
    """`warden serve` logs in as a warden_engine member: storing, sending and the loop's
    pass (which locks rows) need nothing more."""
    async with Database(as_role(db_url, login_roles.engine), max_size=8) as engine_db:
        engine = Services.create(engine_db, policy_default=Verdict.ALLOW)
        with scoped("default"):
            await support.store(engine_db, subscriber("triage"))
            await _send(engine, "evt-e")
        with scoped(ACROSS_TENANTS):  # the loop's passes, as `warden serve` runs them
            [outcome] = await event_starts.run_pending(engine)
            assert await event_starts.run_pending(engine) == []
    assert outcome.outcome == "started"
    assert await _ledger(db) == [("default", "evt-e", "triage", "started")]
