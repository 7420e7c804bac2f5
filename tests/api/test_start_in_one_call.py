"""Starts over HTTP as `warden serve` composes them (starts that dispatch): where a start
plan covers the workflow, the start is one SQL call (docs/design.md#starts-in-one-call),
and the API answers exactly as for the long way — created, replayed, refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import pytest

from engine.governance.policy import Verdict
from engine.runs.services import Services
from engine.scheduling.scheduler import with_start_dispatch
from engine.store import Database
from tests import support
from tests.api.conftest import Harness, harness

pytestmark = pytest.mark.anyio

FLOW = """
id: flow
name: flow
version: 1.0.0
steps:
  fetch: {type: job, topic: t.fetch}
  plan: {type: job, topic: t.plan, depends_on: [fetch]}
"""

ALLOW = """
default_decision: deny
rules:
  - name: flow-topics
    match: {topics: ["t.*"]}
    decision: allow
    reason: the flow's own topics
"""

JSON = {"Content-Type": "application/json"}
RUNS = "/api/v1/workflows/flow/runs"


@pytest.fixture
async def served(db_url: str) -> AsyncIterator[Harness]:
    """The API as `warden serve` composes it: starts dispatch their first steps."""
    async with Database(db_url, max_size=20) as db, harness(with_start_dispatch(
            Services.create(db, policy_default=Verdict.DENY,
                            approval_expires_ms=60_000))) as api:
        yield api


@pytest.fixture
def in_one_call(monkeypatch: pytest.MonkeyPatch) -> list[UUID | None]:
    """What each start's call of warden.start_planned_run answered (None: no row)."""
    return support.spy_start_planned(monkeypatch)


def comparable(doc: dict[str, Any]) -> Any:
    """A run document with its own id, its key and its times taken out."""
    run_id, key = doc["run_id"], doc.get("idempotency_key")

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()
                    if not k.endswith("_at") and k != "idempotency_key"}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str):
            return value.replace(run_id, "<run>").replace(key or "\x00", "<key>")
        return value

    return walk(doc)


async def test_a_start_in_one_call_answers_as_the_long_way_does(
        served: Harness, in_one_call: list[UUID | None]) -> None:
    await support.activate_policy(served.svc, ALLOW)
    await support.store(served.svc.db, FLOW)
    headers = {**served.as_("alice"), **JSON}
    body = '{"input": {"ticket": 7}, "priority": 2}'
    long_way = await served.client.post(RUNS, content=body,
                                        headers={**headers, "Idempotency-Key": "k-1"})
    one_call = await served.client.post(RUNS, content=body,
                                        headers={**headers, "Idempotency-Key": "k-2"})
    assert long_way.status_code == one_call.status_code == 201, one_call.text
    assert in_one_call == [None, UUID(one_call.json()["run_id"])]
    first, second = (comparable(r.json()) for r in (long_way, one_call))
    assert first == second and second["status"] == "running"
    assert one_call.headers["Location"] == f"/api/v1/workflow-runs/{one_call.json()['run_id']}"

    # the same key and body: a replay; another body: a conflict; neither writes a run
    replay = await served.client.post(RUNS, content=body,
                                      headers={**headers, "Idempotency-Key": "k-2"})
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["run_id"] == one_call.json()["run_id"]
    other = await served.client.post(RUNS, content='{"input": {"ticket": 8}}',
                                     headers={**headers, "Idempotency-Key": "k-2"})
    assert other.status_code == 409
    assert other.headers["Content-Type"].startswith("application/problem+json")
    # bad input never reaches the call, and is refused naming its field
    bad = await served.client.post(RUNS, content='{"input": [1]}', headers=headers)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "input"
    async with served.svc.db.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM warden.runs")
        assert await cur.fetchone() == (2,)


async def test_another_tenants_caller_starts_nothing_there(
        served: Harness, in_one_call: list[UUID | None]) -> None:
    await support.activate_policy(served.svc, ALLOW)
    await support.store(served.svc.db, FLOW)
    headers = {**served.as_("alice"), **JSON}
    for _ in range(2):  # the plan exists now
        assert (await served.client.post(RUNS, content="{}", headers=headers)).status_code == 201
    # mallory holds keys for acme only: default's workflow and plan are not hers to use
    theirs = await served.client.post(RUNS, content="{}",
                                      headers={**served.as_("mallory", "acme"), **JSON})
    assert theirs.status_code == 404
    denied = await served.client.post(RUNS, content="{}",
                                      headers={**served.as_("mallory", "default"), **JSON})
    assert denied.status_code == 403
    async with served.svc.db.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM warden.runs WHERE tenant_id = 'acme'")
        assert await cur.fetchone() == (0,)
