"""The operator page at 3 a.m., in a real browser: search runs, see why one is stuck and who
works on it, cancel and rerun from the page, and a demo whose server stops.

The stack (uvicorn + engine loops + a worker for the demo topics) and the browser helpers
are those of `test_ui.py`; screenshots go to the test's tmp dir, under `screens/`.
"""

from __future__ import annotations

import re
from pathlib import Path
from uuid import UUID

import anyio
import pytest

from engine.core.enums import RunStatus
from engine.core.errors import PolicyDenied
from engine.governance import approvals
from engine.runs import lifecycle
from engine.store.records import RunRow
from tests import support
from tests.e2e import test_demo, test_ui
from tests.e2e.test_demo import GATE, KEY, PAGE, Demo
from tests.e2e.test_ui import SLOW, STAMP, Stack, browser_page, playwright_api, shot, sign_in

# the fixtures of test_ui.py and test_demo.py, used here by name
stack = test_ui.stack
shots = test_ui.shots
demo_env = test_demo.demo_env
demos = test_demo.demos

pytestmark = pytest.mark.anyio

# job.incident.* is allowed by the demo policy, but no worker polls this topic
ESCALATE = """
id: escalate
name: escalate to a human
version: 1.0.0
steps:
  detect: {type: job, topic: job.incident.detect}
  escalate: {type: job, topic: job.incident.escalate, depends_on: [detect]}
"""
# no rule matches job.other.*: the demo policy's default decision denies it at submit
STRAY = """
id: stray
name: a job no rule allows
version: 1.0.0
steps:
  page: {type: job, topic: job.other.page}
"""


async def _status(stack: Stack, run_id: object, status: RunStatus) -> None:
    async def reached() -> bool:
        return (await support.detail(stack.svc, run_id)).run.status is status  # type: ignore[arg-type]

    await support.wait_for(reached, timeout=SLOW / 1000, what=f"run {run_id} to be {status}")


async def reruns_of(stack: Stack, run_id: UUID) -> list[RunRow]:
    return await lifecycle.page(stack.svc.db, "default",
                                filters=lifecycle.RunFilter(rerun_of=run_id), limit=10)


async def test_runs_are_searched_by_every_field_and_a_refused_search_says_why(
        stack: Stack, shots: Path) -> None:
    expect = playwright_api().expect
    await support.store(stack.svc.db, STRAY)
    waiting = await support.start(stack.svc, "incident-remediation", {"incident_id": "INC-1001"},
                                  by="alice", key="pager-4711")
    rejected = await support.start(stack.svc, "incident-remediation",
                                   {"incident_id": "INC-1002"}, by="alice")
    with pytest.raises(PolicyDenied):  # the denied run is stored all the same
        await support.start(stack.svc, "stray", {"incident_id": "INC-1003"}, by="alice")
    [denied] = await lifecycle.page(stack.svc.db, "default",
                               filters=lifecycle.RunFilter(workflow_id="stray"), limit=2)
    await _status(stack, waiting.run_id, RunStatus.WAITING)
    await _status(stack, rejected.run_id, RunStatus.WAITING)
    [gate] = (await support.detail(stack.svc, rejected.run_id)).approvals
    await approvals.decide(stack.svc.db, tenant_id="default", approval_id=gate.approval_id,
                           approve=False, principal="olga", reason="not tonight")
    await _status(stack, rejected.run_id, RunStatus.DENIED)
    short = {r.run_id: str(r.run_id)[:8] for r in (waiting, rejected, denied)}
    table = "#runs-table tbody tr"

    async with browser_page(shots, "search") as page:
        async def shown() -> list[str]:
            await expect(page.locator("#runs-live")).to_contain_text("shown")
            return sorted(await page.locator(f"{table} td:nth-child(2) code").all_inner_texts())

        async def search(**fields: str) -> None:
            await page.get_by_role("link", name="Clear").click()
            for label, value in fields.items():
                await page.get_by_label(label.replace("_", " "), exact=True).fill(value)
            await page.get_by_role("button", name="Search").click()

        def ids(*runs: object) -> list[str]:
            return sorted(short[r.run_id] + "…" for r in runs)  # type: ignore[attr-defined]

        await page.goto(f"{stack.base_url}/ui")
        await sign_in(page, stack.keys["olga"])
        await expect(page.locator(table)).to_have_count(3)

        # denied by policy and rejected by an approver are two filters
        await page.get_by_role("link", name="denied by policy", exact=True).click()
        assert await shown() == ids(denied)
        await expect(page.locator(table)).to_contain_text("the default decision")
        await page.get_by_role("link", name="rejected", exact=True).click()
        assert await shown() == ids(rejected)
        await expect(page.locator(table)).to_contain_text("rejected by olga: not tonight")
        await page.get_by_role("link", name="denied", exact=True).click()
        assert await shown() == ids(denied, rejected)

        await search(Input_field="incident_id=INC-1001")
        assert await shown() == ids(waiting)
        assert "match=incident_id%3DINC-1001" in page.url  # the search is a link to share
        await search(Run_id_or_prefix=short[rejected.run_id])
        assert await shown() == ids(rejected)
        await search(Idempotency_key="pager-4711")
        assert await shown() == ids(waiting)
        await search(Workflow_id="stray")
        assert await shown() == ids(denied)
        await search(Created_from="2020-01-01", Created_before="2999-01-01 00:00")
        assert await shown() == ids(waiting, rejected, denied)
        await search(Created_before="2020-01-01 08:00")
        await expect(page.locator(table)).to_have_text("No runs match.")

        # a search the server refuses shows its 400, not an empty table
        await search(Created_from="yesterday")
        error = page.locator("#runs-error")
        await expect(error).to_contain_text(
            "The server refused this search: created_after must be an ISO 8601 time, "
            "got 'yesterday'")
        await expect(page.get_by_label("Created from")).to_have_attribute("aria-invalid", "")
        await expect(page.locator(table)).to_have_text(
            "No runs shown: the search above was refused.")
        await shot(page, shots, "10-search-refused")
        await search(Run_id_or_prefix="xyz")
        await expect(error).to_contain_text("neither an id nor an id prefix")
        await search(Input_field="INC-1001")
        await expect(error).to_contain_text("write field=value")
        await search(Input_field="incident_id=INC-1002")
        await expect(error).to_be_hidden()
        assert await shown() == ids(rejected)


async def test_a_stuck_run_says_no_worker_polls_its_topic_and_is_cancelled_and_rerun(
        stack: Stack, shots: Path) -> None:
    expect = playwright_api().expect
    await support.store(stack.svc.db, ESCALATE)
    run = await support.start(stack.svc, "escalate", {"incident_id": "INC-2001"}, by="alice")
    short = str(run.run_id)[:8]

    async with browser_page(shots, "stuck") as page:
        await page.goto(f"{stack.base_url}/ui/runs/{run.run_id}")
        await sign_in(page, stack.keys["olga"])

        # escalate's job waits for a worker nobody runs: the page says so, not "running"
        note = "pending: no live worker polls topic job.incident.escalate"
        await expect(page.locator("#steps-table")).to_contain_text(note, timeout=SLOW)
        await expect(page.locator("#run-live")).to_contain_text(f"Running: escalate ({note})")
        node = page.locator('#dag g[data-step="escalate"]')
        await expect(node).to_have_attribute("data-state", "pending")
        await expect(node).to_contain_text("pending")
        await expect(page.get_by_role("button", name="Rerun…")).to_be_hidden()  # not ended
        await shot(page, shots, "11-run-unattended")

        # the workers and queues page: who polls what, and the topic nobody polls
        await page.get_by_role("navigation", name="Main").get_by_role(
            "link", name="Workers").click()
        worker = page.locator('#workers-table tr[data-worker="ui-test-worker"]')
        await expect(worker).to_contain_text("live")
        await expect(worker).to_contain_text("job.incident.patch.apply")
        await expect(worker.locator("time").first).to_have_text(STAMP)
        queue = page.locator('#queues-table tr[data-topic="job.incident.escalate"]')
        await expect(queue).to_contain_text(note)
        await expect(queue.locator("td").nth(1)).to_have_text("1")  # waiting
        await expect(queue.locator("td").nth(6)).to_have_text("0")  # live workers polling
        detect = page.locator('#queues-table tr[data-topic="job.incident.detect"]')
        await expect(detect).to_contain_text("ui-test-worker")
        await expect(detect.locator("td").nth(5)).to_have_text("1")  # claimed last minute
        await shot(page, shots, "12-workers")

        # cancel from the page: it says what stops, asks for a reason, then acts
        await page.go_back()
        await page.get_by_role("button", name="Cancel run…").click()
        await expect(page.locator("#cancel-plan")).to_contain_text("Stops now: escalate")
        await page.get_by_label(re.compile("^Reason")).fill("paged by hand")
        await page.get_by_role("button", name="Cancel the run").click()
        await expect(page.locator("#run-status")).to_contain_text("cancelled", timeout=SLOW)
        await expect(page.locator("#run-live")).to_contain_text("Cancelled by olga: paged by hand")

        # rerun: the dry-run plan first, then confirm; the runs link both ways
        await page.get_by_role("button", name="Rerun…").click()
        await page.get_by_label("From step").select_option("escalate")
        await page.get_by_role("button", name="Show the plan").click()
        plan = page.locator("#rerun-plan-out")
        await expect(plan).to_contain_text("Reused (outputs carried over): detect")
        await expect(plan.locator("#rerun-plan-table")).to_contain_text("incident-jobs")
        await expect(plan).to_contain_text("Needs no approval.")
        assert await reruns_of(stack, run.run_id) == []  # the plan started nothing
        await shot(page, shots, "13-rerun-plan")
        await page.get_by_role("button", name="Start the rerun").click()
        await expect(page).not_to_have_url(re.compile(f"/ui/runs/{run.run_id}$"))
        [new_id] = [str(r.run_id) for r in await reruns_of(stack, run.run_id)]
        await expect(page).to_have_url(re.compile(f"/ui/runs/{new_id}$"))
        await page.locator("#run-summary").get_by_role("link", name=f"{short}…").click()
        await expect(page).to_have_url(re.compile(f"/ui/runs/{run.run_id}$"))
        await expect(page.locator("#run-reruns")).to_contain_text(new_id[:8])
        await page.locator("#run-reruns").get_by_role("link", name=new_id[:8]).click()
        await expect(page).to_have_url(re.compile(f"/ui/runs/{new_id}$"))


async def test_the_demos_page_says_the_demo_ended_when_its_server_stops(
        demo_env: dict[str, str], demos: list[Demo], shots: Path) -> None:
    """`warden demo` as a real process: approve in its page, the run ends, the demo exits,
    and the page says the demo ended (not "the server did not answer")."""
    expect = playwright_api().expect
    demo = Demo(demo_env)
    demos.append(demo)
    url = (await anyio.to_thread.run_sync(demo.wait_for, PAGE))[2]
    key = (await anyio.to_thread.run_sync(demo.wait_for, KEY))[1]
    _run_id, approval_id = (await anyio.to_thread.run_sync(demo.wait_for, GATE)).groups()
    async with browser_page(shots, "demo") as page:
        await page.goto(f"{url}/approvals/{approval_id}")
        await sign_in(page, key)
        await page.get_by_role("button", name="Approve").click()
        await expect(page.locator("#approval-live")).to_contain_text("Approved by demo-operator")
        assert await anyio.to_thread.run_sync(demo.exit_code) == 0
        state = page.locator("#server-state")
        await expect(state).to_contain_text("The server stopped (the demo ended)",
                                            timeout=15_000)
        await expect(page.locator("body")).not_to_contain_text("did not answer")
        await shot(page, shots, "14-demo-ended")
