"""Control flow with real `warden serve`, `warden worker` and `warden` CLI processes: a
condition and a join end to end, a timer that outlives the serve that set it, two serves
firing timers once, an event sent from the command line (docs/workflows.md#control-flow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest

from engine.core.enums import RunStatus, StepStatus
from engine.store import Database
from tests import support
from tests.e2e.processes import REPO, Processes

pytestmark = pytest.mark.anyio

FLOW = """
id: flow-e2e
name: branch, join, sleep, wait
version: 1.0.0
steps:
  classify: {type: job, topic: e2e.flow.classify}
  escalate:
    type: job
    topic: e2e.flow.escalate
    depends_on: [classify]
    when: "input.severity == 'high'"
  fix:
    type: job
    topic: e2e.flow.fix
    depends_on: [classify]
    when: "input.severity != 'high'"
  joined: {type: job, topic: e2e.flow.join, depends_on: [escalate, fix],
           trigger: any_succeeded}
  nap: {type: sleep, duration_ms: 300, depends_on: [joined]}
  approved:
    type: wait_event
    depends_on: [nap]
    event: change.approved
    key: "${input.ticket}"
  done: {type: job, topic: e2e.flow.done, depends_on: [approved],
         input: {by: "${steps.approved.output.by}"}}
"""

TOPICS = ["e2e.flow.classify", "e2e.flow.escalate", "e2e.flow.fix", "e2e.flow.join",
          "e2e.flow.done"]

TIMER = """
id: timer-e2e
name: a long timer
version: 1.0.0
steps:
  nap: {type: sleep, duration_ms: 3600000}
"""


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WARDEN_DATABASE_URL": db_url, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


async def _step(db: Database, run_id: UUID, step_id: str) -> StepStatus:
    return next(s.status for s in (await support.detail(db, run_id)).steps
                if s.step_id == step_id)


async def _until_step(db: Database, run_id: UUID, step_id: str, wanted: StepStatus,
                      timeout: float = 30) -> None:
    async def check() -> bool:
        return await _step(db, run_id, step_id) is wanted

    await support.wait_for(check, timeout=timeout, what=f"{step_id} to be {wanted}")


async def test_branch_join_sleep_and_a_cli_event_end_to_end(
        db: Database, db_url: str, procs: Processes) -> None:
    await support.store(db, FLOW)
    procs.serve()
    procs.worker(*TOPICS)
    run = await support.start(db, "flow-e2e", {"severity": "low", "ticket": "CHG-9"})
    await _until_step(db, run.run_id, "approved", StepStatus.WAITING)
    shown = _cli(db_url, "runs", "show", str(run.run_id))
    assert shown.returncode == 0, shown.stderr
    assert "skipped: when input.severity == 'high' was false (input.severity=\"low\")" \
        in shown.stdout
    assert "waits for event change.approved with key 'CHG-9'" in shown.stdout
    bad = _cli(db_url, "events", "send", "--id", "c-1", "--name", "change approved",
               "--key", "CHG-9")
    assert bad.returncode == 2 and "--name" in bad.stderr, (bad.stdout, bad.stderr)
    sent = _cli(db_url, "events", "send", "--id", "c-1", "--name", "change.approved",
                "--key", "CHG-9", "--data", '{"by": "carol"}', "--json")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["replayed"] is False
    again = _cli(db_url, "events", "send", "--id", "c-1", "--name", "change.approved",
                 "--key", "CHG-9", "--data", '{"by": "carol"}')
    assert again.returncode == 0 and "unchanged" in again.stdout
    clash = _cli(db_url, "events", "send", "--id", "c-1", "--name", "change.approved",
                 "--key", "CHG-9", "--data", '{"by": "mallory"}')
    assert clash.returncode == 4, (clash.stdout, clash.stderr)

    async def ended() -> bool:
        return (await support.detail(db, run.run_id)).run.status.is_final

    await support.wait_for(ended, what="the run to end")
    detail = await support.detail(db, run.run_id)
    assert detail.run.status is RunStatus.SUCCEEDED
    status = {s.step_id: s.status for s in detail.steps}
    assert status["escalate"] is StepStatus.SKIPPED and status["joined"] is \
        StepStatus.SUCCEEDED
    kinds = await support.kinds(db, run.run_id)
    assert kinds.count("timer.fired") == 1 and kinds.count("wait.matched") == 1


async def test_a_timer_fires_after_the_serve_that_set_it_is_gone(
        db: Database, procs: Processes) -> None:
    await support.store(db, TIMER)
    first = procs.serve()
    runs = [await support.start(db, "timer-e2e") for _ in range(3)]
    for run in runs:
        await _until_step(db, run.run_id, "nap", StepStatus.WAITING)
    first.send_signal(signal.SIGKILL)  # no goodbye: nothing of the timer lived in it
    first.wait()
    await support.advance_clock(db, 3601)
    procs.serve()
    procs.serve()  # two serves now: each timer still fires once
    for run in runs:
        await _until_step(db, run.run_id, "nap", StepStatus.SUCCEEDED)
    for run in runs:
        assert (await support.kinds(db, run.run_id)).count("timer.fired") == 1
        assert (await support.detail(db, run.run_id)).run.status is RunStatus.SUCCEEDED


def test_a_bad_condition_is_refused_by_the_cli_with_its_column(db_url: str,
                                                                tmp_path: Path) -> None:
    source = tmp_path / "bad.yaml"
    source.write_text(FLOW.replace("input.severity != 'high'", "input.severity != 'high"))
    done = _cli(db_url, "workflows", "apply", str(source))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "steps.fix.when: column 19: unterminated string (no closing ')" in done.stderr


WAITS = """
id: waits-e2e
name: many waits
version: 1.0.0
steps:
  wait: {type: wait_event, event: deploy.done, key: "${input.key}"}
"""


async def test_two_serves_match_each_event_once(db: Database, procs: Processes) -> None:
    from engine.runs import events
    await support.store(db, WAITS)
    svc = support.services(db)
    runs = [await support.start(db, "waits-e2e", {"key": f"k-{i % 10}"}) for i in range(30)]
    procs.serve()
    procs.serve()
    for i in range(5):  # half the keys before their waits begin, or while they begin
        await events.send(svc, tenant_id="default", event_id=f"early-{i}", name="deploy.done",
                          key=f"k-{i}", data={"i": i}, sent_by="test")
    for run in runs:
        if int(run.input["key"][2:]) >= 5:
            await _until_step(db, run.run_id, "wait", StepStatus.WAITING)
    for i in range(5, 10):  # the other half while they wait
        await events.send(svc, tenant_id="default", event_id=f"late-{i}", name="deploy.done",
                          key=f"k-{i}", data={"i": i}, sent_by="test")
    for run in runs:
        await _until_step(db, run.run_id, "wait", StepStatus.SUCCEEDED)
        kinds = await support.kinds(db, run.run_id)
        assert kinds.count("wait.matched") == 1 and kinds.count("wait.started") == 1
        detail = await support.detail(db, run.run_id)
        assert detail.steps[0].output == {"i": int(run.input["key"][2:])}
