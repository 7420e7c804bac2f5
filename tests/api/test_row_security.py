"""Row-level security as the second fence behind the API's own checks (docs/security.md):
served by a role that is only a member of warden_engine, a request sees its caller's
tenant alone — even through a query written without any tenant filter — while the whole
flow (start, schedule, claim, approve) still works with exactly that role's privileges."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.app import create_app
from api.auth import authorize
from engine.core.enums import RunStatus
from engine.governance import apikeys
from engine.governance.apikeys import Role
from engine.governance.policy import Verdict
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from engine.store.scope import ACROSS_TENANTS, scoped
from tests import support
from tests.roles import LoginRoles, as_role

pytestmark = pytest.mark.anyio

SECRET = b"test-secret-key-of-at-least-32-bytes!!"
FLOW = """
id: flow
name: flow
version: 1.0.0
steps:
  a: {type: job, topic: t.rls}
  gate: {type: approval, depends_on: [a]}
"""


async def unfiltered(request: Request) -> Response:
    """A route written carelessly: no tenant filter at all."""
    await authorize(request, Role.SUBMITTER)
    async with request.app.state.svc.db.connection() as conn:
        cur = await conn.execute("SELECT DISTINCT tenant_id FROM warden.runs")
        found = sorted(row[0] for row in await cur.fetchall())
    return JSONResponse({"tenants": found})


@pytest.fixture
async def engine_api(db_url: str, login_roles: LoginRoles
                     ) -> AsyncIterator[tuple[httpx.AsyncClient, Services, dict[str, str]]]:
    async with Database(as_role(db_url, login_roles.engine), max_size=8) as db:
        svc = Services.create(db, policy_default=Verdict.ALLOW, approval_expires_ms=60_000)
        keys = {}
        for name, roles, tenants in [("alice", [Role.SUBMITTER, Role.OPERATOR],
                                      ["default", "acme"]),
                                     ("bob", [Role.APPROVER], ["default"])]:
            _row, keys[name] = await apikeys.create(db, SECRET, name=name, roles=roles,
                                                    tenants=tenants, created_by="test")
        app = create_app(svc=svc, secret_key=SECRET,
                         extra_routes=[Route("/test/unfiltered", unfiltered)])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, svc, keys


def headers(key: str, tenant: str) -> dict[str, str]:
    return {"X-API-Key": key, "X-Tenant-ID": tenant}


async def test_a_query_without_a_tenant_filter_returns_the_callers_tenant_only(
        engine_api: tuple[httpx.AsyncClient, Services, dict[str, str]]) -> None:
    client, svc, keys = engine_api
    for tenant in ("default", "acme"):
        with scoped(tenant):
            await support.store(svc.db, FLOW, tenant=tenant)
            await support.start(svc, "flow", tenant=tenant)
    for tenant in ("default", "acme"):
        answer = await client.get("/test/unfiltered", headers=headers(keys["alice"], tenant))
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"tenants": [tenant]}
    # unauthenticated: no scope at all, so not even an error that reveals a row
    assert (await client.get("/test/unfiltered")).status_code == 401


async def test_the_whole_flow_runs_on_the_engine_roles_privileges(
        engine_api: tuple[httpx.AsyncClient, Services, dict[str, str]], db_url: str,
        login_roles: LoginRoles) -> None:
    client, svc, keys = engine_api
    alice, bob = headers(keys["alice"], "default"), headers(keys["bob"], "default")
    stored = await client.post("/api/v1/workflows", content=FLOW, headers={
        **alice, "Content-Type": "application/yaml"})
    assert stored.status_code == 201, stored.text
    started = await client.post("/api/v1/workflows/flow/runs", json={"input": {"x": 1}},
                                headers={**alice, "Idempotency-Key": "k1"})
    assert started.status_code == 201, started.text
    run_id = started.json()["run_id"]
    scheduler = Scheduler(svc)
    with scoped(ACROSS_TENANTS):  # the scheduler's passes, as `warden serve` runs them
        await support.settle(scheduler)
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("INSERT INTO warden.worker_grants (role_name, tenant_id, topic_glob, "
                      "granted_by) VALUES (%s, 'default', 't.*', 'test')",
                      [login_roles.worker_a])
    with psycopg.connect(as_role(db_url, login_roles.worker_a), autocommit=True) as worker:
        [(job_id, token)] = worker.execute(
            "SELECT job_id, lease_token FROM warden.claim_jobs(ARRAY['t.rls'], 'w', 5, "
            "interval '1 minute')").fetchall()
        worker.execute("SELECT warden.complete_job(%s, %s, '{\"ok\": true}')", [job_id, token])
    with scoped(ACROSS_TENANTS):
        await support.settle(scheduler)
    pending = await client.get("/api/v1/approvals?status=pending", headers=bob)
    [approval] = pending.json()["items"]
    decided = await client.post(f"/api/v1/approvals/{approval['approval_id']}/approve",
                                json={"reason": "looks right"}, headers=bob)
    assert decided.status_code == 200, decided.text
    with scoped(ACROSS_TENANTS):
        await support.settle(scheduler)
    run = (await client.get(f"/api/v1/workflow-runs/{run_id}", headers=alice)).json()
    assert run["status"] == RunStatus.SUCCEEDED.value
    timeline = await client.get(f"/api/v1/workflow-runs/{run_id}/timeline", headers=alice)
    kinds: list[Any] = [e["kind"] for e in timeline.json()["items"]]
    assert kinds[0] == "run.created" and kinds[-1] == "run.succeeded"
