"""Objects built over HTTP for the security and contract tests: one tenant's world each.

A world is a workflow, a run resting at its approval gate (so it has jobs and a pending
approval), and a policy snapshot, all made through the API by that tenant's keys. Jobs are
worked through the SQL protocol, as a worker would, with bounded loops and no sleeps.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import anyio
import httpx

from engine.core.resources import package_file
from tests import support
from tests.api.conftest import Harness

P = ParamSpec("P")
R = TypeVar("R")

SEED_YAML = package_file("examples/incident-remediation.yaml").read_text()
YAML = {"Content-Type": "application/yaml"}


def bounded(seconds: float) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Fails the decorated async test if it runs longer than ``seconds``."""

    def wrap(test: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(test)
        async def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            with anyio.fail_after(seconds):
                return await test(*args, **kwargs)

        return inner

    return wrap


@dataclass(frozen=True)
class World:
    tenant: str
    workflow_id: str
    run_id: str
    job_ids: tuple[str, ...]
    approval_id: str
    snapshot_hash: str

    def path_values(self) -> dict[str, str]:
        """A value of this world for every path parameter the API has."""
        return {"workflow_id": self.workflow_id, "run_id": self.run_id,
                "job_id": self.job_ids[0], "approval_id": self.approval_id,
                "snapshot_hash": self.snapshot_hash, "name": SCHEDULE}

    def secrets(self) -> list[str]:
        """Strings that identify this world's objects; none may reach another tenant."""
        return [self.workflow_id, self.run_id, *self.job_ids, self.approval_id,
                self.snapshot_hash]


async def call(api: Harness, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """The response; an exception the app raised (httpx's ASGI transport re-raises what
    Starlette answered 500 for) comes back as a 500 naming it, so a loop can go on."""
    try:
        return await api.client.request(method, url, **kwargs)
    except Exception as exc:
        text = f"the app raised {type(exc).__name__}: {exc}"
        return httpx.Response(500, text=text, request=httpx.Request(method, url))


# every world's workflow has a cron schedule (docs/workflows.md#schedules), named this
SCHEDULE = "nightly"


def definition(workflow_id: str) -> str:
    return (SEED_YAML.replace("id: incident-remediation", f"id: {workflow_id}", 1)
            + f"schedules:\n  - {{name: {SCHEDULE}, cron: '0 3 * * *', timezone: UTC}}\n")


def bundle(marker: str) -> str:
    """A policy bundle that allows everything and whose hash is unique to ``marker``."""
    return ("default_decision: allow\nrules:\n"
            f"  - name: {marker}\n    match: {{risk_tags: [{marker}]}}\n"
            "    decision: deny\n    reason: only a test\n")


async def drive_to_rest(api: Harness, run_id: str, headers: dict[str, str]) -> dict[str, Any]:
    """Scheduler passes plus a worker answering through SQL, until the run rests."""
    for _ in range(30):
        await support.settle(api.scheduler)
        claimed = await support.claim(api.svc.db, support.SEED_TOPICS)
        for job in claimed:
            output: dict[str, Any] = {"step": job.step_id}
            if job.step_id == "patch_plan":
                output = {"action": "rollback", "service": "checkout"}
            if job.step_id == "classify":  # apply_patch runs once per affected host
                output = {"step": job.step_id, "affected_hosts": ["checkout-1"]}
            await support.complete(api.svc.db, job, output)
        shown = await api.client.get(f"/api/v1/workflow-runs/{run_id}", headers=headers)
        assert shown.status_code == 200, shown.text
        doc: dict[str, Any] = shown.json()
        if not claimed and doc["status"] in ("waiting", "succeeded", "failed", "denied"):
            return doc
    raise AssertionError(f"run {run_id} never came to rest")


async def build(api: Harness, *, tenant: str, author: str, workflow_id: str) -> World:
    """A world in ``tenant``: ``author`` (a submitter) stores and starts, root stores policy."""
    headers = api.as_(author, tenant)
    stored = await api.client.post("/api/v1/workflows", content=definition(workflow_id),
                                   headers={**headers, **YAML})
    assert stored.status_code == 201, stored.text
    started = await api.client.post(f"/api/v1/workflows/{workflow_id}/runs",
                                    json={"input": {"incident_id": f"{tenant}-1"}},
                                    headers=headers)
    assert started.status_code == 201, started.text
    run_id = str(started.json()["run_id"])
    reader = api.as_("root", tenant)
    doc = await drive_to_rest(api, run_id, reader)
    assert doc["status"] == "waiting", doc
    [approval] = [a for a in doc["approvals"] if a["status"] == "pending"]
    job_ids = tuple(str(j["job_id"]) for j in doc["jobs"])
    assert job_ids, doc
    policy = await api.client.post("/api/v1/policy/bundles", content=bundle(f"only-{tenant}"),
                                   headers={**reader, **YAML})
    assert policy.status_code == 201, policy.text
    return World(tenant, workflow_id, run_id, job_ids, str(approval["approval_id"]),
                 str(policy.json()["snapshot_hash"]))


async def acme_and_default(api: Harness) -> tuple[World, World]:
    """acme's world (built by mallory) and default's (built by alice), distinct ids."""
    acme = await build(api, tenant="acme", author="mallory", workflow_id="acme-secret-flow")
    default = await build(api, tenant="default", author="alice",
                          workflow_id="incident-remediation")
    return acme, default


def leaks(body: str, world: World) -> list[str]:
    """Which of ``world``'s identifying strings appear in a response body."""
    return [s for s in world.secrets() if s in body]
