"""POST /api/v1/events and warden.send_event (docs/workflows.md#events): the happy path
through a waiting run, idempotency, and the attacks — another tenant, the wrong role,
oversized or malformed events, a SQL client without a grant."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from engine.store.scope import ACROSS_TENANTS, scoped
from tests import support
from tests.api.conftest import Harness
from tests.roles import LoginRoles, as_role

pytestmark = pytest.mark.anyio

WAIT = """
id: waiter
name: wait for a ticket
version: 1.0.0
steps:
  triage: {type: job, topic: t.triage}
  ask:
    type: approval
    depends_on: [triage]
    when: "steps.triage.output.severity == 'high'"
  wait:
    type: wait_event
    depends_on: [ask]
    trigger: all_done
    event: ticket.approved
    key: "ticket-${input.ticket}"
  nap: {type: sleep, duration_ms: 60000, depends_on: [wait]}
"""

EVENT = {"id": "evt-1", "name": "ticket.approved", "key": "ticket-42",
         "data": {"approved_by": "carol"}}


async def _post(api: Harness, body: Any, who: str = "alice", tenant: str = "default") -> Any:
    return await api.client.post("/api/v1/events", json=body, headers=api.as_(who, tenant))


async def test_an_event_wakes_the_waiting_run_and_the_document_shows_the_flow(
        api: Harness) -> None:
    await support.store(api.svc.db, WAIT)
    run = await support.start(api.svc, "waiter", {"ticket": 42})
    await support.settle(api.scheduler)
    [job] = await support.claim(api.svc.db, ["t.triage"])
    await support.complete(api.svc.db, job, {"severity": "low"})
    await support.settle(api.scheduler)
    doc = (await api.client.get(f"/api/v1/workflow-runs/{run.run_id}",
                                headers=api.as_("alice"))).json()
    steps = {s["step_id"]: s for s in doc["steps"]}
    assert doc["status"] == "waiting"
    assert steps["ask"]["status"] == "skipped"
    assert steps["ask"]["flow"]["condition"] == {
        "result": False, "read": {"steps.triage.output.severity": "low"}}
    assert steps["ask"]["note"] == ("skipped: when steps.triage.output.severity == 'high' "
                                    "was false (steps.triage.output.severity=\"low\")")
    assert steps["wait"]["flow"]["trigger"] == "all_done"
    assert steps["wait"]["flow"]["waits_for"]["key"] == "ticket-42"
    assert steps["wait"]["note"] == "waits for event ticket.approved with key 'ticket-42'"

    sent = await _post(api, EVENT)
    assert sent.status_code == 201, sent.text
    assert sent.json()["replayed"] is False and sent.json()["sent_by"] == "alice"
    await support.settle(api.scheduler)
    doc = (await api.client.get(f"/api/v1/workflow-runs/{run.run_id}",
                                headers=api.as_("alice"))).json()
    steps = {s["step_id"]: s for s in doc["steps"]}
    assert steps["wait"]["status"] == "succeeded"
    assert steps["wait"]["output"] == {"approved_by": "carol"}
    assert steps["wait"]["note"] == "took event evt-1 sent by alice"
    assert steps["nap"]["status"] == "waiting"
    assert steps["nap"]["note"].startswith("timer fires at ")
    assert steps["nap"]["flow"]["timer"]["fire_at"] is not None


async def test_the_same_id_is_one_event_and_other_content_is_a_409(api: Harness) -> None:
    first = await _post(api, EVENT)
    again = await _post(api, EVENT, who="olga")  # another sender, same event: a replay
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["replayed"] is True
    assert again.json()["received_at"] == first.json()["received_at"]
    assert again.json()["sent_by"] == "alice"  # the original
    changed = await _post(api, {**EVENT, "data": {"approved_by": "mallory"}})
    assert changed.status_code == 409
    assert changed.headers["content-type"].startswith("application/problem+json")


async def test_roles_that_may_not_send_events_are_refused(api: Harness) -> None:
    for who in ("bob", "wendy", "audrey"):  # approver, worker, auditor
        answer = await _post(api, {**EVENT, "id": f"by-{who}"}, who=who)
        assert answer.status_code == 403, (who, answer.text)
    assert (await api.client.post("/api/v1/events", json=EVENT)).status_code == 401
    for who in ("alice", "olga", "root"):
        assert (await _post(api, {**EVENT, "id": f"by-{who}"}, who=who)).status_code == 201
    async with api.svc.db.connection() as conn:
        cur = await conn.execute("SELECT event_id FROM warden.events ORDER BY event_id")
        assert [r[0] for r in await cur.fetchall()] == ["by-alice", "by-olga", "by-root"]


async def test_another_tenants_event_never_reaches_a_run(api: Harness) -> None:
    await support.store(api.svc.db, WAIT)
    run = await support.start(api.svc, "waiter", {"ticket": 42})
    await support.settle(api.scheduler)
    [job] = await support.claim(api.svc.db, ["t.triage"])
    await support.complete(api.svc.db, job, {"severity": "low"})
    await support.settle(api.scheduler)
    # alice is not granted acme; mallory is granted acme only
    assert (await _post(api, EVENT, tenant="acme")).status_code == 403
    assert (await _post(api, EVENT, who="mallory", tenant="default")).status_code == 403
    assert (await _post(api, EVENT, who="mallory", tenant="acme")).status_code == 201
    await support.settle(api.scheduler)
    detail = await support.detail(api.svc, run.run_id)
    assert detail.run.status.value == "waiting"
    # the same id in another tenant is another event
    assert (await _post(api, EVENT)).status_code == 201
    await support.settle(api.scheduler)
    assert {s.step_id: s.status.value for s in (await support.detail(
        api.svc, run.run_id)).steps}["wait"] == "succeeded"


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"name": "n", "key": "k"}, 422, "id"),
    ({"id": "e", "key": "k"}, 422, "name"),
    ({"id": "e", "name": "n"}, 422, "key"),
    ({"id": "", "name": "n", "key": "k"}, 422, "id"),
    ({"id": "e" * 201, "name": "n", "key": "k"}, 422, "id"),
    ({"id": 5, "name": "n", "key": "k"}, 422, "id"),
    ({"id": "e", "name": "no spaces", "key": "k"}, 422, "name"),
    ({"id": "e", "name": "n", "key": ["k"]}, 422, "key"),
    ({"id": "e", "name": "n", "key": "k" * 513}, 422, "key"),
    ({"id": "e", "name": "n", "key": "k", "data": {"x": "y" * 40_000}, "extra": 1}, 400,
     "extra"),
    ({"id": "e", "name": "n", "key": "k", "data": {"nul": "a\u0000b"}}, 400, None),
    ({"id": "e", "name": "n", "key": "k", "data": "y" * 70_000}, 413, None),
    ([1, 2], 400, None),
])
async def test_malformed_and_oversized_events_are_refused_and_change_nothing(
        api: Harness, body: Any, status: int, field: str | None) -> None:
    answer = await _post(api, body)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    if field is not None:
        problem = answer.json()
        fields = [e.get("field") for e in problem.get("errors", [])]
        assert field in fields or problem.get("field") == field, problem
    async with api.svc.db.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM warden.events")
        assert (await cur.fetchone()) == (0,)


async def test_a_bad_condition_is_a_422_naming_the_field_and_the_column(
        api: Harness) -> None:
    bad = WAIT.replace("steps.triage.output.severity == 'high'",
                       "steps.triage.output.severity === 'high'")
    answer = await api.client.post("/api/v1/workflows", content=bad, headers={
        **api.as_("alice"), "Content-Type": "application/yaml"})
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert {"field": "steps.ask.when",
            "message": "column 32: '=' is not an operator; compare with '=='"} \
        in answer.json()["errors"]
    stray = WAIT.replace("steps.triage.output.severity == 'high'",
                         "steps.nap.status == 'succeeded'")
    answer = await api.client.post("/api/v1/workflows", content=stray, headers={
        **api.as_("alice"), "Content-Type": "application/yaml"})
    assert answer.status_code == 422
    assert {"field": "steps.ask.when",
            "message": "column 1: steps.nap.status refers to step 'nap', which is not an "
                       "ancestor of 'ask'"} in answer.json()["errors"]


def test_sql_clients_send_only_with_a_grant_and_only_their_tenant(
        db_url: str, login_roles: LoginRoles) -> None:
    send = ("SELECT outcome, sent_by FROM warden.send_event(%s, %s, 'deploy.done', 'k', "
            "'{\"ok\": true}', 'forged')")
    with psycopg.connect(as_role(db_url, login_roles.worker_b), autocommit=True) as worker:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            worker.execute(send, ["default", "w-1"])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # no table privilege
            worker.execute("INSERT INTO warden.events VALUES ('default', 'x', 'n', 'k', "
                           "'{}', 'd', 's', now(), now())")
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("INSERT INTO warden.worker_grants (role_name, tenant_id, topic_glob, "
                      "granted_by) VALUES (%s, 'default', 'event.deploy.*', 'test')",
                      [login_roles.worker_b])
    with psycopg.connect(as_role(db_url, login_roles.worker_b), autocommit=True) as worker:
        # recorded as itself, whatever it claims
        assert worker.execute(send, ["default", "w-2"]).fetchone() == (
            "created", login_roles.worker_b)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            worker.execute(send, ["acme", "w-3"])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            worker.execute("SELECT * FROM warden.send_event('default', 'w-4', 'other.name', "
                           "'k', '{}')")


def test_an_engine_session_sends_for_its_scoped_tenant_only(
        db_url: str, login_roles: LoginRoles) -> None:
    send = "SELECT outcome FROM warden.send_event(%s, 'e-1', 'n', 'k', '{}')"
    with psycopg.connect(as_role(db_url, login_roles.engine), autocommit=True) as engine:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # no scope: nothing
            engine.execute(send, ["default"])
        engine.execute("SELECT set_config('warden.tenant', 'acme', false)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            engine.execute(send, ["default"])
        assert engine.execute(send, ["acme"]).fetchone() == ("created",)
        # row-level security: the scoped session reads its tenant's events only
        engine.execute("SELECT set_config('warden.tenant', 'default', false)")
        assert engine.execute("SELECT count(*) FROM warden.events").fetchone() == (0,)
        with scoped(ACROSS_TENANTS):
            engine.execute("SELECT set_config('warden.tenant', '*', false)")
            assert engine.execute("SELECT count(*) FROM warden.events").fetchone() == (1,)
