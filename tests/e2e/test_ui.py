"""The operator page in a real browser: headless Chromium drives `/ui` against a live server.

One in-process stack per test: uvicorn on a free 127.0.0.1 port serving the API and the
UI, the engine's scheduler/reaper/reconciler loops and a worker with the demo handlers,
all on the test's event loop and a fresh database. Chromium is the distribution's
package (`apt-get install chromium`), driven by Playwright through `executable_path`
(Playwright's own browser download is never used). Screenshots go to the test's tmp
dir, under `screens/` (pytest prints the path of a failed test's tmp dir).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from api.app import create_app
from api.ui import ui_routes
from engine.core.enums import ApprovalStatus, RunStatus
from engine.core.resources import package_file
from engine.daemons.serve import EngineConfig, run_engine
from engine.definitions import workflows
from engine.examples import handlers
from engine.governance import apikeys, decisions
from engine.governance.apikeys import Role
from engine.governance.policy import Verdict
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from engine.worker.runner import Worker, WorkerConfig
from tests import support

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
SECRET = b"ui-test-secret-key-of-at-least-32-bytes!"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SLOW = 30_000  # ms: bounded waits for the engine to move a run


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is not installed, and the browser tests need it: install the "
                    "distribution's package (Debian/Ubuntu: `sudo apt-get install -y chromium`). "
                    "Playwright's own browser download is not used.", pytrace=False)
    return path


def playwright_api() -> Any:
    try:
        from playwright import async_api
    except ImportError:
        pytest.fail("Playwright is not installed: `.venv/bin/pip install -e '.[test]'` "
                    "(or `pip install playwright`; never `playwright install`).", pytrace=False)
    return async_api


@dataclass
class Stack:
    base_url: str
    svc: Services
    keys: dict[str, str]


@pytest.fixture
async def stack(db_url: str) -> AsyncIterator[Stack]:
    chromium_path()  # fail at once, before any set-up, when the browser cannot run
    playwright_api()
    async with Database(db_url, max_size=20) as db:
        svc = Services.create(db, policy_default=Verdict.DENY)
        await workflows.store(db, tenant_id="default", media_type=None, created_by="alice",
                              source=package_file("examples/incident-remediation.yaml").read_text())
        stored = await decisions.store_bundle(
            db, tenant_id="default", media_type=None, created_by="root",
            source=package_file("examples/demo-policy.yaml").read_text())
        await decisions.activate(db, tenant_id="default", activated_by="root",
                                  snapshot_hash=stored.row.snapshot_hash)
        keys = {}
        for name, roles in {"alice": [Role.SUBMITTER],
                            "olga": [Role.APPROVER, Role.OPERATOR],
                            "sam": [Role.SUBMITTER, Role.APPROVER]}.items():
            _row, keys[name] = await apikeys.create(db, SECRET, name=name, roles=roles,
                                                    tenants=["default"], created_by="test")

        app = create_app(svc=svc, secret_key=SECRET, extra_routes=ui_routes())
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                               lifespan="off"))
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        stop = asyncio.Event()
        worker = Worker(db, handlers.handle,
                        WorkerConfig(topics=handlers.TOPICS, poll_interval_s=0.2,
                                     name="ui-test-worker"))
        tasks = [asyncio.create_task(server.serve(sockets=[sock])),
                 asyncio.create_task(run_engine(svc, EngineConfig(poll_interval_s=0.2,
                                                                  reap_interval_s=0.5), stop)),
                 asyncio.create_task(worker.run(stop))]

        async def started() -> bool:
            if tasks[0].done():
                tasks[0].result()  # raises what stopped the server
            return server.started

        await support.wait_for(started, timeout=10, what="uvicorn to listen")
        try:
            yield Stack(f"http://127.0.0.1:{port}", svc, keys)
        finally:
            stop.set()
            server.should_exit = True
            await asyncio.gather(*tasks)
            sock.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where a test's screenshots go: ``<its tmp dir>/screens``."""
    path = tmp_path / "screens"
    path.mkdir()
    return path


@contextlib.asynccontextmanager
async def browser_page(shots: Path, name: str, *,
                       timezone_id: str = "Europe/Berlin") -> AsyncIterator[Any]:
    """A fresh page in a fresh browser profile (its own localStorage), in a time zone
    other than the machine's UTC so that the zone the page writes is the browser's; on
    failure its screenshot is saved as ``<name>-failure.png``."""
    executable = chromium_path()
    async_api = playwright_api()
    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True,
                                           args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1360, "height": 900},
                                            timezone_id=timezone_id)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            yield page
            assert errors == [], f"JavaScript errors on the page: {errors}"
        except BaseException:
            with contextlib.suppress(Exception):
                await page.screenshot(path=shots / f"{name}-failure.png", full_page=True)
            raise
        finally:
            await context.close()
            await browser.close()


async def shot(page: Any, shots: Path, name: str) -> None:
    await page.screenshot(path=shots / f"{name}.png", full_page=True)


async def sign_in(page: Any, key: str) -> None:
    await page.get_by_label("API key", exact=True).fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await playwright_api().expect(page.get_by_role("button", name="Forget key")).to_be_visible()


# "2026-12-06 03:04:05 UTC+01:00": every time has its date and the browser's zone
# (Berlin: +01:00 in winter, +02:00 in summer)
STAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC\+0[12]:00")


async def test_operator_opens_a_waiting_run_approves_it_and_watches_it_finish(
        stack: Stack, shots: Path) -> None:
    expect = playwright_api().expect
    run = await support.start(stack.svc, "incident-remediation", {"incident_id": "INC-7781"},
                              by="alice")
    short = str(run.run_id)[:8]
    async with browser_page(shots, "approve") as page:
        await page.goto(f"{stack.base_url}/ui")
        key = page.get_by_label("API key", exact=True)
        await expect(key).to_be_focused()
        await key.fill("wdn_0123456789abcdef_not-a-key")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#sign-in-error")).to_contain_text("invalid or revoked")
        await key.fill(stack.keys["olga"])
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("heading", name="Runs")).to_be_visible()

        # The runs list, filtered on waiting: the run shows up once the worker and the
        # scheduler have brought it to the gate.
        await page.get_by_role("link", name="waiting", exact=True).click()
        row = page.locator("#runs-table tbody tr", has_text=short)
        await expect(row).to_contain_text("waiting", timeout=SLOW)
        await expect(row).to_contain_text("alice")
        await expect(row.locator("time").first).to_have_text(STAMP)
        await expect(page.locator("#who-name")).to_have_text("olga")
        await shot(page, shots, "01-runs-waiting")

        # The run: the DAG shows the gate waiting after three succeeded steps.
        await row.get_by_role("link", name=short).click()
        await expect(page.locator("#run-status")).to_contain_text("waiting")
        dag = page.locator("#dag svg[role=img]")
        await expect(dag.locator("title").first).to_contain_text("7 steps")
        gate = dag.locator('g[data-step="approval_gate"]')
        await expect(gate).to_have_attribute("data-status", "waiting")
        await expect(gate).to_contain_text("waiting")
        for step in ("detect", "classify", "patch_plan", "check_hosts"):
            await expect(dag.locator(f'g[data-step="{step}"]')).to_contain_text("succeeded")
        await expect(dag.locator("path.edge")).to_have_count(7)
        # the for_each step's items, counted by status
        await expect(page.locator("#step-check_hosts")).to_contain_text("3 items: 3 succeeded")
        await expect(page.locator("#run-live")).to_contain_text("Waiting for approval")
        await expect(page.locator("#steps-table")).to_contain_text("approval_gate")
        await expect(page.locator("#decisions-table")).to_contain_text("incident-jobs")
        await expect(page.locator("#timeline-table")).to_contain_text("approval.requested")
        await shot(page, shots, "02-run-waiting")

        # The approvals queue, then the approval: what it binds, exactly as stored.
        await page.get_by_role("navigation", name="Main").get_by_role(
            "link", name=re.compile("^Approvals")).click()
        queued = page.locator("#approvals-table tbody tr", has_text=short)
        await expect(queued).to_contain_text("approval_gate")
        await expect(queued).to_contain_text("alice")
        # what it lets run, without opening it
        await expect(queued).to_contain_text(
            "step approval_gate of incident-remediation@1.1.0, then apply_patch, notify")
        await expect(queued.locator("time").first).to_have_text(STAMP)
        await shot(page, shots, "03-approvals-queue")
        await queued.get_by_role("link", name=re.compile("^Review")).click()
        [approval] = (await support.detail(stack.svc, run.run_id)).approvals
        assert approval.job_hash and approval.policy_snapshot_hash
        await expect(page.locator("#job-hash")).to_have_text(approval.job_hash)
        bound = page.locator("#approval-bound")
        await expect(bound).to_contain_text("recomputed by the server")
        await expect(bound).to_contain_text(approval.policy_snapshot_hash)
        await expect(page.locator("#approval-asked")).to_contain_text("approval step")
        await expect(page.locator("#approval-covers")).to_contain_text("Output of patch_plan")
        then = page.locator("#approval-then")
        await expect(then).to_contain_text("patch-apply-bounded")  # the rule for what runs next
        await expect(then).to_contain_text("2026.11.24-3")  # its input, rendered
        await shot(page, shots, "04-approval-review")

        # Decide with the keyboard: reason, Tab to Approve, Enter.
        await page.get_by_label(re.compile("^Reason")).fill("plan reviewed")
        await page.keyboard.press("Tab")
        await expect(page.get_by_role("button", name="Approve")).to_be_focused()
        await page.keyboard.press("Enter")
        await expect(page.locator("#approval-live")).to_contain_text("Approved by olga")
        # the page follows the run the approval let go on, to its end
        await expect(page.locator("#approval-run")).to_contain_text("succeeded", timeout=SLOW)
        await shot(page, shots, "05-approved")

        # Back to the run: it finishes, and says who approved what.
        await page.get_by_role("link", name="Open the run").click()
        await expect(page.locator("#run-status")).to_contain_text("succeeded", timeout=SLOW)
        await expect(dag.locator('g[data-status="succeeded"]')).to_have_count(7)
        await expect(page.locator("#run-approvals")).to_contain_text("olga")
        await expect(page.locator("#run-approvals")).to_contain_text("plan reviewed")
        await expect(page.locator("#timeline-table")).to_contain_text("run.succeeded")
        await expect(page.locator("#decisions-table")).to_contain_text("patch-apply-bounded")
        await shot(page, shots, "06-run-succeeded")

        # The key lives in the browser's localStorage: a reload and a new tab use it
        # without asking; it is never in a cookie or a URL.
        assert await page.context.cookies() == []
        assert stack.keys["olga"] not in page.url
        assert await page.evaluate("localStorage.getItem('warden.apiKey')") == stack.keys["olga"]
        await page.reload()
        await expect(page.locator("#run-status")).to_contain_text("succeeded")
        tab = await page.context.new_page()
        await tab.goto(f"{stack.base_url}/ui/approvals")
        await expect(tab.locator("#who-name")).to_have_text("olga")
        await expect(tab.locator("#sign-in")).to_be_hidden()
        # "Forget key" in one tab signs every tab out
        await tab.get_by_role("button", name="Forget key").click()
        await expect(tab.get_by_label("API key", exact=True)).to_be_visible()
        await expect(page.get_by_label("API key", exact=True)).to_be_visible()
        assert await page.evaluate("localStorage.getItem('warden.apiKey')") is None
        await tab.close()

    detail = await support.detail(stack.svc, run.run_id)
    assert detail.run.status is RunStatus.SUCCEEDED
    [decided] = detail.approvals
    assert (decided.status, decided.decided_by, decided.reason) == (
        ApprovalStatus.APPROVED, "olga", "plan reviewed")


async def test_a_starter_cannot_approve_and_a_rejection_ends_the_run_denied(
        stack: Stack, shots: Path) -> None:
    expect = playwright_api().expect
    run = await support.start(stack.svc, "incident-remediation", {"incident_id": "INC-7790"},
                              by="sam")

    async def waiting() -> bool:
        return (await support.detail(stack.svc, run.run_id)).run.status is RunStatus.WAITING

    await support.wait_for(waiting, timeout=SLOW / 1000, what="the run to reach its gate")
    [approval] = (await support.detail(stack.svc, run.run_id)).approvals
    async with browser_page(shots, "reject") as page:
        await page.goto(f"{stack.base_url}/ui/approvals")
        await sign_in(page, stack.keys["sam"])
        queued = page.locator("#approvals-table tbody tr", has_text=str(run.run_id)[:8])
        await expect(queued).to_contain_text("your run: another approver decides")
        await queued.get_by_role("link", name=re.compile("^Review")).click()
        await expect(page).to_have_url(re.compile(f"/ui/approvals/{approval.approval_id}$"))

        # sam started the run: the buttons are greyed out before any click, and say why.
        await expect(page.locator("#decide-why")).to_contain_text(
            "You started this run (as sam)")
        await expect(page.get_by_role("button", name="Approve")).to_be_disabled()
        await expect(page.get_by_role("button", name="Reject")).to_be_disabled()
        await shot(page, shots, "07-starter-refused")

        # olga rejects; a rejection needs a reason.
        await page.get_by_role("button", name="Forget key").click()
        await sign_in(page, stack.keys["olga"])
        await expect(page.locator("#decide-why")).to_be_hidden()
        error = page.locator("#decide-error")
        await page.get_by_role("button", name="Reject").click()
        await expect(error).to_have_text("Write a reason to reject.")
        await expect(page.get_by_label(re.compile("^Reason"))).to_be_focused()
        await page.get_by_label(re.compile("^Reason")).fill("wrong release: roll forward")
        await page.get_by_role("button", name="Reject").click()
        await expect(page.locator("#approval-live")).to_contain_text("Rejected by olga")

        await page.get_by_role("link", name="Open the run").click()
        await expect(page.locator("#run-status")).to_contain_text("denied", timeout=SLOW)
        dag = page.locator("#dag svg[role=img]")
        await expect(dag.locator('g[data-step="approval_gate"]')).to_contain_text("denied")
        await expect(dag.locator('g[data-step="apply_patch"]')).to_contain_text("skipped")
        await expect(page.locator("#run-live")).to_contain_text(
            "Denied at step approval_gate: rejected by olga: wrong release: roll forward")
        await expect(page.locator("#run-approvals")).to_contain_text("wrong release")
        await expect(page.locator("#decisions-table")).to_contain_text("incident-jobs")
        await shot(page, shots, "08-run-denied")

    [decided] = (await support.detail(stack.svc, run.run_id)).approvals
    assert (decided.status, decided.decided_by) == (ApprovalStatus.REJECTED, "olga")


async def test_pages_carry_no_data_and_the_ui_json_routes_authorize_like_the_api(
        db_url: str) -> None:
    """No browser: the shells, the security headers, and the two /ui/api routes' guards."""
    async with Database(db_url, max_size=5) as db:
        svc = Services.create(db, policy_default=Verdict.ALLOW)
        await support.store(db, (REPO / "tests" / "e2e" / "gate.yaml").read_text())
        keys = {}
        for name, roles, tenants in (("alice", [Role.SUBMITTER], ["default"]),
                                     ("olga", [Role.APPROVER, Role.OPERATOR], ["default"]),
                                     ("mallory", [Role.APPROVER, Role.OPERATOR], ["acme"])):
            _row, keys[name] = await apikeys.create(db, SECRET, name=name, roles=roles,
                                                    tenants=tenants, created_by="test")
        run = await support.start(svc, "gate", {"secret": "tenant data"}, by="alice")
        await support.settle(Scheduler(svc))
        [approval] = (await support.detail(svc, run.run_id)).approvals
        app = create_app(svc=svc, secret_key=SECRET, extra_routes=ui_routes())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ui") as client:
            def as_(name: str, tenant: str = "default") -> dict[str, str]:
                return {"X-API-Key": keys[name], "X-Tenant-ID": tenant}

            for path in ("/ui", f"/ui/runs/{run.run_id}", "/ui/approvals",
                         f"/ui/approvals/{approval.approval_id}"):
                page = await client.get(path)
                assert page.status_code == 200, path
                assert page.headers["content-type"].startswith("text/html")
                assert "script-src 'self'" in page.headers["content-security-policy"]
                assert page.headers["cache-control"] == "no-store"
                assert "tenant data" not in page.text and '<label for="sign-in-key">' in page.text
            assert (await client.get("/ui/runs/not-a-run")).status_code == 404
            script = await client.get("/ui/static/warden.js")
            assert script.status_code == 200 and "javascript" in script.headers["content-type"]

            decisions = f"/ui/api/runs/{run.run_id}/decisions"
            plan = f"/ui/api/approvals/{approval.approval_id}/plan"
            assert (await client.get(decisions)).status_code == 401
            assert (await client.get(decisions, headers=as_("alice"))).status_code == 200
            assert (await client.get(decisions, headers=as_("mallory", "acme"))).status_code == 404
            assert (await client.get(decisions, headers=as_("mallory"))).status_code == 403
            assert (await client.get(plan, headers=as_("alice"))).status_code == 403  # no role
            assert (await client.get(plan, headers=as_("mallory", "acme"))).status_code == 404
            doc = (await client.get(plan, headers=as_("olga"))).json()
            assert doc["job_hash"] == approval.job_hash and doc["job_hash_matches"] is True
            assert doc["asked_by"] == {"kind": "step", "step_id": "ask", "workflow_id": "gate",
                                       "workflow_version": "1.0.0"}
            assert doc["covers"]["input"] == {"secret": "tenant data"}
            missing = await client.get("/ui/api/approvals/not-an-id/plan", headers=as_("olga"))
            assert missing.status_code == 404
            assert missing.headers["content-type"] == "application/problem+json"
