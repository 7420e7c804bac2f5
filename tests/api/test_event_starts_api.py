"""Event-started runs through the API (docs/workflows.md#event-started-runs): a posted
event starts the subscribing workflow once, the run document names the event, another
tenant's event starts nothing here, a bad `on_event` is a 422 naming the field."""

from __future__ import annotations

import pytest

from engine.runs import event_starts
from tests.api.conftest import Harness

pytestmark = pytest.mark.anyio

SUBSCRIBER = """
id: triage
name: triage
version: 1.0.0
on_event:
  - name: incident.opened
    input: {incident: "${event.data.id}", key: "${event.key}"}
steps:
  work: {type: job, topic: t.api.triage}
"""


async def _store(api: Harness, source: str, tenant: str = "default") -> int:
    response = await api.client.post("/api/v1/workflows", content=source,
                                     headers={**api.as_("alice", tenant),
                                              "Content-Type": "application/yaml"})
    return response.status_code


async def test_a_posted_event_starts_one_run_and_the_document_names_it(api: Harness) -> None:
    assert await _store(api, SUBSCRIBER) in (200, 201)
    body = {"id": "evt-1", "name": "incident.opened", "key": "INC-7", "data": {"id": 7}}
    for _ in range(2):
        posted = await api.client.post("/api/v1/events", json=body, headers=api.as_("alice"))
        assert posted.status_code in (200, 201, 202), posted.text
    [started] = await event_starts.run_pending(api.svc)
    assert await event_starts.run_pending(api.svc) == []
    doc = (await api.client.get(f"/api/v1/workflow-runs/{started.run_id}",
                                headers=api.as_("alice"))).json()
    assert doc["input"] == {"incident": 7, "key": "INC-7"}
    assert doc["idempotency_key"] == "event:evt-1"
    assert doc["created_by"] == "event:incident.opened/evt-1"
    assert (doc["started_by_event"]["event_id"], doc["started_by_event"]["name"],
            doc["started_by_event"]["key"]) == ("evt-1", "incident.opened", "INC-7")


async def test_another_tenants_event_starts_nothing_here(api: Harness) -> None:
    assert await _store(api, SUBSCRIBER) in (200, 201)
    body = {"id": "evt-9", "name": "incident.opened", "key": "x", "data": {"id": 1}}
    # alice may not act for acme; mallory, granted acme only, sends one there
    denied = await api.client.post("/api/v1/events", json=body,
                                   headers=api.as_("alice", "acme"))
    assert denied.status_code == 403, denied.text
    posted = await api.client.post("/api/v1/events", json=body,
                                   headers=api.as_("mallory", "acme"))
    assert posted.status_code == 201, posted.text
    assert await event_starts.run_pending(api.svc) == []
    listed = await api.client.get("/api/v1/workflow-runs", headers=api.as_("alice"))
    assert listed.json()["items"] == []


@pytest.mark.parametrize(("replace", "by", "field"), [
    ("name: incident.opened", "name: 'incident opened'", "on_event[0].name"),
    ("${event.data.id}", "${steps.work.output}", "on_event[0].input.incident"),
    ("  work:", "  work:", None),
])
async def test_a_bad_on_event_is_a_422_naming_the_field(api: Harness, replace: str, by: str,
                                                        field: str | None) -> None:
    source = SUBSCRIBER.replace(replace, by)
    if field is None:  # a duplicate subscription
        source = SUBSCRIBER.replace("steps:", "  - {name: incident.opened}\nsteps:")
        field = "on_event[1].name"
    response = await api.client.post("/api/v1/workflows", content=source,
                                     headers={**api.as_("alice"),
                                              "Content-Type": "application/yaml"})
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]
    async with api.svc.db.connection() as conn:  # nothing stored, nothing subscribed
        cur = await conn.execute("SELECT (SELECT count(*) FROM warden.workflows) + "
                                 "(SELECT count(*) FROM warden.event_triggers)")
        assert await cur.fetchone() == (0,)
