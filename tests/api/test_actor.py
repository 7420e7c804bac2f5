"""The actor of what an API call does is the key's principal, never a name the client
sends."""

from __future__ import annotations

import pytest

from tests import support
from tests.api.conftest import Harness

pytestmark = pytest.mark.anyio

PREFIX = "/api/v1"
GATE = "id: gate\nname: gate\nversion: 1.0.0\nsteps:\n  ask: {type: approval}\n"


async def test_a_client_cannot_name_the_actor(api: Harness) -> None:
    await support.store(api.svc.db, GATE)
    start = f"{PREFIX}/workflows/gate/runs"
    spoofed = await api.client.post(start, json={"input": {}, "created_by": "bob"},
                                    headers=api.as_("alice"))
    assert spoofed.status_code == 400 and "created_by" in spoofed.text
    for header in ("X-Actor", "X-Principal", "X-Forwarded-User"):
        run = (await api.client.post(start, json={"input": {}},
                                     headers={**api.as_("alice"), header: "bob"})).json()
        assert run["created_by"] == "alice"
    await support.settle(api.scheduler)
    detail = (await api.client.get(f"{PREFIX}/workflow-runs/{run['run_id']}",
                                   headers=api.as_("bob"))).json()
    [approval] = detail["approvals"]
    url = f"{PREFIX}/approvals/{approval['approval_id']}/approve"
    as_alice = await api.client.post(url, json={"reason": "ok", "decided_by": "carol"},
                                     headers=api.as_("bob"))
    assert as_alice.status_code == 400 and "decided_by" in as_alice.text
    decided = await api.client.post(url, json={"reason": "ok"},
                                    headers={**api.as_("bob"), "X-Actor": "carol"})
    assert decided.json()["decided_by"] == "bob"
    events = (await api.client.get(f"{PREFIX}/workflow-runs/{run['run_id']}/timeline",
                                   headers=api.as_("alice"))).json()["items"]
    actors = {e["kind"]: e["actor"] for e in events}
    assert (actors["run.created"], actors["approval.approved"]) == ("alice", "bob")
