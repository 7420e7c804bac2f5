"""The operator page shows control flow (docs/workflows.md#control-flow): a condition
that was false and what it read, a timer with its fire time, a wait with its event."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.runs import events
from tests import support
from tests.e2e import test_ui
from tests.e2e.test_ui import SLOW, Stack, browser_page, playwright_api, shot, sign_in

pytestmark = pytest.mark.anyio

stack = test_ui.stack
shots = test_ui.shots

FLOW = """
id: flow-ui
name: conditions, timers and waits
version: 1.0.0
steps:
  page_oncall: {type: notify, when: "input.severity == 'high'", message: paged}
  nap: {type: sleep, duration_ms: 3600000}
  approved:
    type: wait_event
    event: change.approved
    key: "${input.ticket}"
    depends_on: [page_oncall, nap]
    trigger: all_done
"""


async def test_the_run_page_shows_conditions_timers_and_waits(
        stack: Stack, shots: Path) -> None:
    expect = playwright_api().expect
    await support.store(stack.svc.db, FLOW)
    run = await support.start(stack.svc, "flow-ui", {"severity": "low", "ticket": "CHG-1"},
                              by="alice")
    async with browser_page(shots, "flow") as page:
        await page.goto(f"{stack.base_url}/ui/runs/{run.run_id}")
        await sign_in(page, stack.keys["olga"])
        steps = page.locator("#steps-table")
        await expect(steps).to_contain_text(
            "skipped: when input.severity == 'high' was false (input.severity=\"low\")",
            timeout=SLOW)
        await expect(steps).to_contain_text("timer fires at ")
        await expect(page.locator("#run-live")).to_contain_text("Waiting: nap (timer fires at ")
        await expect(page.locator("#timeline-table")).to_contain_text("timer.started")
        await expect(page.locator("#timeline-table")).to_contain_text("step.condition")
        await shot(page, shots, "flow-01-waiting")
        await support.advance_clock(stack.svc.db, 3601)
        await expect(steps).to_contain_text(
            "waits for event change.approved with key 'CHG-1'", timeout=SLOW)
        await events.send(stack.svc, tenant_id="default", event_id="e-1",
                          name="change.approved", key="CHG-1", data={"by": "carol"},
                          sent_by="olga")
        await expect(page.locator("#run-status")).to_contain_text("succeeded", timeout=SLOW)
        await expect(steps).to_contain_text("took event e-1 sent by olga")
        await shot(page, shots, "flow-02-done")
