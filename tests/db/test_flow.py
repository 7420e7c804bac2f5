"""Conditions, joins, timers and event waits (docs/workflows.md#control-flow), against a
real database, driven by the scheduler and reaper the way `warden serve` drives them."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import psycopg
import pytest

from engine.core.enums import RunStatus, StepStatus
from engine.core.errors import Conflict, InvalidInput
from engine.daemons.reaper import Reaper
from engine.runs import events
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from tests import support

pytestmark = pytest.mark.anyio

BRANCH = """
id: branch
name: branch on severity
version: 1.0.0
steps:
  classify: {type: job, topic: t.classify}
  approve:
    type: job
    topic: t.approve
    depends_on: [classify]
    when: "steps.classify.output.severity in ['high', 'critical']"
  auto:
    type: job
    topic: t.auto
    depends_on: [classify]
    when: "not (steps.classify.output.severity in ['high', 'critical'])"
  patch:
    type: job
    topic: t.patch
    depends_on: [approve, auto]
    trigger: any_succeeded
"""

CLEANUP = """
id: cleanup
name: clean up after anything
version: 1.0.0
steps:
  work: {type: job, topic: t.work}
  after: {type: job, topic: t.after, depends_on: [work], trigger: all_done,
          when: "steps.work.status != 'succeeded'"}
"""

SLEEPY = """
id: sleepy
name: wait ten minutes
version: 1.0.0
steps:
  first: {type: job, topic: t.first}
  nap: {type: sleep, duration_ms: 600000, depends_on: [first]}
  last: {type: job, topic: t.last, depends_on: [nap]}
"""

UNTIL = """
id: until
name: sleep until a time from the input
version: 1.0.0
steps:
  nap: {type: sleep, until: "${input.at}"}
"""

WAIT = """
id: waiter
name: continue when the ticket is approved
version: 1.0.0
steps:
  wait:
    type: wait_event
    event: ticket.approved
    key: "${input.incident_id}"
    timeout_ms: 3600000
  use: {type: job, topic: t.use, depends_on: [wait], input: {by: "${steps.wait.output.by}"}}
"""


async def _run_jobs(db: Database, scheduler: Scheduler, topics: list[str],
                    results: dict[str, Any]) -> None:
    """Completes every claimable job of ``topics`` with its step's result, until none."""
    while True:
        await support.settle(scheduler)
        claimed = await support.claim(db, topics)
        if not claimed:
            return
        for job in claimed:
            await support.complete(db, job, results.get(job.step_id, {"ok": True}))


async def _event_data(db: Database, run_id: UUID, kind: str) -> list[dict[str, Any]]:
    return [e.data for e in await support.events(db, run_id) if e.kind == kind]


async def test_a_false_condition_skips_its_step_and_the_join_runs_after_the_skipped_branch(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, BRANCH)
    run = await support.start(db, "branch")
    await _run_jobs(db, scheduler, ["t.classify", "t.approve", "t.auto", "t.patch"],
                    {"classify": {"severity": "low"}})
    detail = await support.detail(db, run.run_id)
    status = {s.step_id: s.status for s in detail.steps}
    assert status == {"classify": StepStatus.SUCCEEDED, "approve": StepStatus.SKIPPED,
                      "auto": StepStatus.SUCCEEDED, "patch": StepStatus.SUCCEEDED}
    assert detail.run.status is RunStatus.SUCCEEDED  # a skipped branch is no failure
    conditions = await _event_data(db, run.run_id, "step.condition")
    assert {"when": "steps.classify.output.severity in ['high', 'critical']",
            "result": False, "read": {"steps.classify.output.severity": "low"}} in conditions
    assert [e.data for e in await support.events(db, run.run_id)
            if e.kind == "step.skipped"] == [
        {"because": "condition",
         "when": "steps.classify.output.severity in ['high', 'critical']"}]


async def test_the_other_branch_when_the_condition_holds(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, BRANCH)
    run = await support.start(db, "branch")
    await _run_jobs(db, scheduler, ["t.classify", "t.approve", "t.auto", "t.patch"],
                    {"classify": {"severity": "critical"}})
    detail = await support.detail(db, run.run_id)
    status = {s.step_id: s.status for s in detail.steps}
    assert status["approve"] is StepStatus.SUCCEEDED and status["auto"] is StepStatus.SKIPPED
    assert status["patch"] is StepStatus.SUCCEEDED


async def test_any_succeeded_join_is_skipped_when_no_branch_succeeded(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, BRANCH)
    run = await support.start(db, "branch")
    await _run_jobs(db, scheduler, ["t.classify"], {"classify": {"severity": 3}})
    # 3 is neither 'high' nor 'critical': 'auto' runs, and fails
    await support.settle(scheduler)
    [auto] = await support.claim(db, ["t.auto"])
    await support.fail(db, auto, retryable=False)
    await support.settle(scheduler)
    detail = await support.detail(db, run.run_id)
    status = {s.step_id: s.status for s in detail.steps}
    assert status["approve"] is StepStatus.SKIPPED and status["auto"] is StepStatus.FAILED
    assert status["patch"] is StepStatus.SKIPPED
    assert detail.run.status is RunStatus.FAILED  # the failure that happened is reported
    skipped = await _event_data(db, run.run_id, "step.skipped")
    assert {"because": "no dependency succeeded"} in skipped


async def test_all_done_cleanup_runs_after_a_failure_and_the_run_still_fails(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, CLEANUP)
    run = await support.start(db, "cleanup")
    await support.settle(scheduler)
    [work] = await support.claim(db, ["t.work"])
    await support.fail(db, work, retryable=False)
    await support.settle(scheduler)
    [after] = await support.claim(db, ["t.after"])
    await support.complete(db, after)
    await support.settle(scheduler)
    detail = await support.detail(db, run.run_id)
    assert {s.step_id: s.status for s in detail.steps} == {
        "work": StepStatus.FAILED, "after": StepStatus.SUCCEEDED}
    assert detail.run.status is RunStatus.FAILED
    [condition] = await _event_data(db, run.run_id, "step.condition")
    assert condition["result"] is True and condition["read"] == {"steps.work.status": "failed"}


async def test_all_done_condition_false_after_success(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, CLEANUP)
    run = await support.start(db, "cleanup")
    await _run_jobs(db, scheduler, ["t.work", "t.after"], {})
    detail = await support.detail(db, run.run_id)
    assert {s.step_id: s.status for s in detail.steps} == {
        "work": StepStatus.SUCCEEDED, "after": StepStatus.SKIPPED}
    assert detail.run.status is RunStatus.SUCCEEDED


async def test_a_condition_that_cannot_be_decided_fails_the_step_naming_why(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, BRANCH.replace("branch", "bad").replace(
        "steps.classify.output.severity in ['high', 'critical']",
        "steps.classify.output.score > 5"))
    run = await support.start(db, "bad")
    await _run_jobs(db, scheduler, ["t.classify", "t.approve", "t.auto", "t.patch"],
                    {"classify": {"score": "high"}})
    detail = await support.detail(db, run.run_id)
    approve = next(s for s in detail.steps if s.step_id == "approve")
    assert approve.status is StepStatus.FAILED
    assert approve.error["type"] == "ConditionError"
    assert approve.error["field"] == "steps.approve.when"
    assert "two numbers or two strings" in approve.error["message"]
    assert approve.error["read"] == {"steps.classify.output.score": "high"}
    assert detail.run.status is RunStatus.FAILED


async def test_a_timer_fires_once_on_database_time(
        db: Database, svc: Services, scheduler: Scheduler) -> None:
    await support.store(db, SLEEPY)
    run = await support.start(db, "sleepy")
    await _run_jobs(db, scheduler, ["t.first"], {})
    detail = await support.detail(db, run.run_id)
    nap = next(s for s in detail.steps if s.step_id == "nap")
    assert nap.status is StepStatus.WAITING and detail.run.status is RunStatus.WAITING
    [started] = await _event_data(db, run.run_id, "timer.started")
    assert nap.wake_at is not None and started["fire_at"] == nap.wake_at.isoformat()
    reaper = Reaper(db)
    assert (await reaper.run_once()).waits == 0  # not due yet
    await support.advance_clock(db, 601)
    assert (await reaper.run_once()).waits == 1
    await support.settle(scheduler)
    [last] = await support.claim(db, ["t.last"])
    await support.complete(db, last)
    await support.settle(scheduler)
    detail = await support.detail(db, run.run_id)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert (await support.kinds(db, run.run_id)).count("timer.fired") == 1


async def test_two_schedulers_fire_a_timer_once(db: Database, svc: Services) -> None:
    await support.store(db, UNTIL.replace("${input.at}", "2030-01-01T00:00:00Z"))
    runs = [await support.start(db, "until") for _ in range(20)]
    first, second = Scheduler(svc), Scheduler(svc)
    await support.settle(first)
    await support.advance_clock(db, (2030 - 2026) * 366 * 86400)
    await Reaper(db, batch_size=100).run_once()
    for _ in range(10):
        await asyncio.gather(first.run_once(), second.run_once())
    for run in runs:
        assert (await support.kinds(db, run.run_id)).count("timer.fired") == 1
        assert (await support.detail(db, run.run_id)).run.status is RunStatus.SUCCEEDED


async def test_a_key_no_event_could_carry_fails_the_wait(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, WAIT)
    run = await support.start(db, "waiter", {"incident_id": "x" * 600})
    await support.settle(scheduler)
    detail = await support.detail(db, run.run_id)
    assert detail.steps[0].status is StepStatus.FAILED
    assert detail.steps[0].error["field"] == "steps.wait.key"
    assert "at most 512" in detail.steps[0].error["message"]
    assert "step.failed" in await support.kinds(db, run.run_id)


async def test_sleep_until_in_the_past_fires_at_once_and_a_bad_until_fails(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, UNTIL)
    past = await support.start(db, "until", {"at": "2001-01-01T00:00:00+00:00"})
    bad = await support.start(db, "until", {"at": "next tuesday"})
    await support.settle(scheduler)
    assert (await support.detail(db, past.run_id)).run.status is RunStatus.SUCCEEDED
    detail = await support.detail(db, bad.run_id)
    assert detail.run.status is RunStatus.FAILED
    assert detail.steps[0].error["field"] == "steps.nap.until"
    assert "RFC 3339" in detail.steps[0].error["message"]


async def _send(svc: Services, event_id: str, key: str, data: Any = None,
                name: str = "ticket.approved", tenant: str = "default") -> events.Sent:
    return await events.send(svc, tenant_id=tenant, event_id=event_id, name=name, key=key,
                             data=data if data is not None else {"by": "carol"},
                             sent_by="tester")


async def test_an_event_sent_before_the_wait_is_kept_and_matched(
        db: Database, svc: Services, scheduler: Scheduler) -> None:
    await support.store(db, WAIT)
    sent = await _send(svc, "evt-1", "INC-7")
    assert sent.created
    run = await support.start(db, "waiter", {"incident_id": "INC-7"})
    await support.settle(scheduler)
    [job] = await support.claim(db, ["t.use"])
    assert job.input == {"by": "carol"}
    [matched] = await _event_data(db, run.run_id, "wait.matched")
    assert matched["event_id"] == "evt-1" and matched["key"] == "INC-7"


async def test_an_event_sent_while_waiting_wakes_the_run(
        db: Database, svc: Services, scheduler: Scheduler) -> None:
    await support.store(db, WAIT)
    run = await support.start(db, "waiter", {"incident_id": "INC-8"})
    other = await support.start(db, "waiter", {"incident_id": "INC-9"})
    await support.settle(scheduler)
    assert (await support.detail(db, run.run_id)).run.status is RunStatus.WAITING
    [started] = await _event_data(db, run.run_id, "wait.started")
    assert started["event"] == "ticket.approved" and started["key"] == "INC-8"
    await _send(svc, "evt-2", "INC-8", {"by": "dave"})
    await support.settle(scheduler)
    [job] = await support.claim(db, ["t.use"])
    assert job.run_id == run.run_id and job.input == {"by": "dave"}
    detail = await support.detail(db, other.run_id)  # another key: still waiting
    assert detail.run.status is RunStatus.WAITING


async def test_the_same_event_twice_is_one_event_and_other_content_is_a_conflict(
        db: Database, svc: Services, scheduler: Scheduler) -> None:
    await support.store(db, WAIT)
    run = await support.start(db, "waiter", {"incident_id": "INC-10"})
    await support.settle(scheduler)
    first = await _send(svc, "evt-3", "INC-10")
    again = await _send(svc, "evt-3", "INC-10")
    assert first.created and not again.created
    assert again.event.received_at == first.event.received_at
    with pytest.raises(Conflict):
        await _send(svc, "evt-3", "INC-10", {"by": "mallory"})
    await support.settle(scheduler)
    assert (await support.kinds(db, run.run_id)).count("wait.matched") == 1
    async with db.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM warden.events")
        assert (await cur.fetchone()) == (1,)


async def test_a_wait_nobody_answers_times_out(
        db: Database, svc: Services, scheduler: Scheduler) -> None:
    await support.store(db, WAIT)
    run = await support.start(db, "waiter", {"incident_id": "INC-11"})
    await support.settle(scheduler)
    await support.advance_clock(db, 3601)
    await Reaper(db).run_once()
    await support.settle(scheduler)
    detail = await support.detail(db, run.run_id)
    wait = detail.steps[0]
    assert wait.status is StepStatus.TIMED_OUT and wait.error["type"] == "WaitTimedOut"
    assert detail.run.status is RunStatus.TIMED_OUT
    assert "wait.timed_out" in await support.kinds(db, run.run_id)
    # an event after the timeout changes nothing for this run
    await _send(svc, "late", "INC-11")
    await support.settle(scheduler)
    assert (await support.detail(db, run.run_id)).run.status is RunStatus.TIMED_OUT


async def test_an_expired_event_is_not_matched(
        db: Database, svc: Services, scheduler: Scheduler) -> None:
    await support.store(db, WAIT)
    await _send(svc, "old", "INC-12")  # kept one day (the default)
    await support.advance_clock(db, 86_401)
    run = await support.start(db, "waiter", {"incident_id": "INC-12"})
    await support.settle(scheduler)
    assert (await support.detail(db, run.run_id)).run.status is RunStatus.WAITING


async def test_cancel_ends_timers_and_waits(
        db: Database, svc: Services, scheduler: Scheduler) -> None:
    from engine.runs import stopping
    await support.store(db, WAIT)
    await support.store(db, UNTIL)
    waiting = await support.start(db, "waiter", {"incident_id": "INC-13"})
    sleeping = await support.start(db, "until", {"at": "2099-01-01T00:00:00Z"})
    await support.settle(scheduler)
    for run in (waiting, sleeping):
        await stopping.cancel(db, tenant_id="default", run_id=run.run_id, by="op")
        detail = await support.detail(db, run.run_id)
        assert detail.run.status is RunStatus.CANCELLED
        assert detail.steps[0].status is StepStatus.CANCELLED
    await _send(svc, "after-cancel", "INC-13")
    await support.advance_clock(db, 100 * 366 * 86400)
    await Reaper(db).run_once()
    await support.settle(scheduler)
    for run in (waiting, sleeping):
        assert (await support.detail(db, run.run_id)).run.status is RunStatus.CANCELLED


async def test_bad_events_are_refused_by_field_and_change_nothing(
        db: Database, svc: Services) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"event_id": ""}, "id"), ({"event_id": "x" * 201}, "id"),
        ({"name": "has space"}, "name"), ({"name": 5}, "name"),
        ({"key": None}, "key"), ({"key": "k" * 513}, "key"),
        ({"data": {"blob": "x" * 70_000}}, "data"), ({"data": {"nul": "a\x00b"}}, "data.nul"),
    ]
    for change, field in cases:
        args = {"event_id": "e", "name": "n", "key": "k", "data": {}, **change}
        with pytest.raises(InvalidInput) as caught:
            await events.send(svc, tenant_id="default", sent_by="t", **args)
        assert caught.value.field == field, (change, caught.value)
    async with db.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM warden.events")
        assert (await cur.fetchone()) == (0,)


# ----------------------------------------------------------------- the race

async def test_an_event_recorded_while_the_wait_begins_makes_the_scheduler_back_off(
        db: Database, db_url: str, svc: Services, scheduler: Scheduler) -> None:
    """send_event holds the key's lock, uncommitted: the wait must not begin (it could
    miss the event), so the pass backs off and the run stays flagged; after the commit
    the wait begins and takes the event."""
    await support.store(db, WAIT)
    run = await support.start(db, "waiter", {"incident_id": "INC-20"})
    with psycopg.connect(db_url) as sender:
        sender.execute("SELECT * FROM warden.send_event('default', 'race-1', "
                       "'ticket.approved', 'INC-20', '{\"by\": \"erin\"}')")
        await scheduler.run_once()
        assert (await support.detail(db, run.run_id)).steps[0].status is StepStatus.PENDING
        sender.commit()
    await support.settle(Scheduler(svc))  # a fresh scheduler: no back-off memory
    [job] = await support.claim(db, ["t.use"])
    assert job.run_id == run.run_id and job.input == {"by": "erin"}


async def test_an_event_sent_while_a_wait_begins_waits_and_then_wakes_the_run(
        db: Database, db_url: str) -> None:
    """The other order, at the SQL protocol: a scheduler transaction holds the key's lock
    and has set the step waiting, uncommitted; send_event waits for it and then flags the
    run, so the waiting step is found."""
    await support.store(db, WAIT)
    run = await support.start(db, "waiter", {"incident_id": "INC-21"})
    with psycopg.connect(db_url) as waiter:
        waiter.execute("UPDATE warden.runs SET needs_scheduling = false WHERE run_id = %s",
                       [run.run_id])
        waiter.commit()
        assert waiter.execute("SELECT pg_try_advisory_xact_lock(warden.event_lock("
                              "'default', 'ticket.approved', 'INC-21'))").fetchone() == (True,)
        waiter.execute("UPDATE warden.steps SET status = 'waiting', started_at = now(), "
                       "await_event = 'ticket.approved', await_key = 'INC-21' "
                       "WHERE run_id = %s AND step_id = 'wait'", [run.run_id])

        def send() -> Any:
            with psycopg.connect(db_url, autocommit=True) as conn:
                return conn.execute("SELECT outcome FROM warden.send_event('default', "
                                    "'race-2', 'ticket.approved', 'INC-21', '{}')").fetchone()

        sending = asyncio.get_running_loop().run_in_executor(None, send)
        await asyncio.sleep(0.3)
        assert not sending.done()  # it waits for the wait's transaction
        waiter.commit()
        assert await sending == ("created",)
        flagged = waiter.execute("SELECT needs_scheduling FROM warden.runs WHERE run_id = %s",
                                 [run.run_id]).fetchone()
        assert flagged == (True,)


async def test_events_and_waits_racing_lose_no_wake_up(db: Database, svc: Services) -> None:
    await support.store(db, WAIT)
    runs = [await support.start(db, "waiter", {"incident_id": f"R-{i}"}) for i in range(12)]
    scheduler = Scheduler(svc)
    await asyncio.gather(scheduler.run_once(), scheduler.run_once(),
                         *(_send(svc, f"race-{i}", f"R-{i}") for i in range(12)))
    for _ in range(20):  # backed-off runs come back; fresh schedulers forget back-offs
        await support.settle(Scheduler(svc))
        waiting = [r for r in runs
                   if (await support.detail(db, r.run_id)).steps[0].status
                   is StepStatus.WAITING]
        if not waiting:
            break
        await asyncio.sleep(0.1)
    for run in runs:
        detail = await support.detail(db, run.run_id)
        assert detail.steps[0].status is StepStatus.SUCCEEDED, run.run_id
        assert (await support.kinds(db, run.run_id)).count("wait.matched") == 1


async def test_rerun_from_a_wait_plans_and_waits_again(
        db: Database, svc: Services, scheduler: Scheduler) -> None:
    from engine.runs import reruns
    await support.store(db, WAIT)
    await _send(svc, "evt-r", "INC-30")
    run = await support.start(db, "waiter", {"incident_id": "INC-30"})
    await _run_jobs(db, scheduler, ["t.use"], {})
    assert (await support.detail(db, run.run_id)).run.status is RunStatus.SUCCEEDED
    plan = await reruns.plan(svc, tenant_id="default", run_id=run.run_id, from_step="wait")
    assert plan.to_run == ["wait", "use"]
    assert plan.flow == {"wait": "waits again for event ticket.approved with key 'INC-30', "
                                 "for 3600000 ms (an event still kept matches again)"}
    _plan, started = await reruns.rerun(svc, tenant_id="default", run_id=run.run_id,
                                        from_step="wait", created_by="op")
    await support.settle(scheduler)
    [matched] = await _event_data(db, started.run.run_id, "wait.matched")
    assert matched["event_id"] == "evt-r"
    # from the job after it: the wait's output is reused, nothing waits
    plan = await reruns.plan(svc, tenant_id="default", run_id=run.run_id, from_step="use")
    assert plan.reused == {"wait": {"by": "carol"}} and plan.flow == {}


async def test_the_reaper_waits_for_a_timer_due_before_its_next_pass(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, UNTIL.replace('until: "${input.at}"', "duration_ms: 300"))
    run = await support.start(db, "until")
    await support.settle(scheduler)
    assert (await support.detail(db, run.run_id)).run.status is RunStatus.WAITING
    assert (await Reaper(db, timer_horizon_s=0.01).run_once()).waits == 0  # beyond it
    assert (await Reaper(db, timer_horizon_s=30).run_once()).waits == 1  # waited for it
    await support.settle(scheduler)
    assert (await support.detail(db, run.run_id)).run.status is RunStatus.SUCCEEDED
