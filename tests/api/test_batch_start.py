"""POST /workflows/{id}/runs/batch: up to 1,000 runs in one call, a result per item."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Harness

pytestmark = pytest.mark.anyio

ONE = """
id: one
name: one step
version: 1.0.0
steps:
  only: {type: job, topic: t.only}
"""
YAML = {"Content-Type": "application/yaml"}
BATCH = "/api/v1/workflows/one/runs/batch"


async def upload(api: Harness, who: str = "alice", tenant: str = "default") -> None:
    response = await api.client.post("/api/v1/workflows", content=ONE,
                                     headers={**api.as_(who, tenant), **YAML})
    assert response.status_code in (200, 201), response.text


async def batch(api: Harness, items: Any, who: str = "alice", tenant: str = "default",
                status: int = 207) -> Any:
    response = await api.client.post(BATCH, json={"items": items},
                                     headers=api.as_(who, tenant))
    assert response.status_code == status, response.text
    return response.json()


async def runs(api: Harness, who: str = "alice", tenant: str = "default") -> list[Any]:
    response = await api.client.get("/api/v1/workflow-runs", params={"limit": "500"},
                                    headers=api.as_(who, tenant))
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def test_each_item_answers_for_itself(api: Harness) -> None:
    await upload(api)
    first = await batch(api, [{"input": {"n": 1}, "idempotency_key": "a"},
                              {"input": {"n": 2}, "idempotency_key": "b"},
                              {"input": {"n": 3}}])
    assert [(i["index"], i["status"], i["replayed"]) for i in first["items"]] == [
        (0, 201, False), (1, 201, False), (2, 201, False)]
    again = await batch(api, [
        {"input": {"n": 1}, "idempotency_key": "a"},   # replay
        {"input": {"n": 9}, "idempotency_key": "b"},   # same key, other body
        {"input": [1]},                                 # not an object
        {"input": {}, "version": "7.7.7"},              # no such version
        {"input": {}, "colour": "red"},                 # unknown field
        "nope",                                         # not an object at all
        {"input": {}, "idempotency_key": 5},            # key not a string
        {"input": {"n": 4}}])
    items = again["items"]
    assert items[0]["status"] == 200 and items[0]["replayed"]
    assert items[0]["run"]["run_id"] == first["items"][0]["run"]["run_id"]
    assert items[1]["status"] == 409 and "run" not in items[1]
    assert items[1]["problem"]["type"].endswith("/idempotency-conflict")
    assert items[2]["status"] == 422
    assert items[2]["problem"]["errors"][0]["field"] == "items[2].input"
    assert items[3]["status"] == 404
    assert items[4]["status"] == 422
    assert items[4]["problem"]["errors"][0]["field"] == "items[4].colour"
    assert items[5]["problem"]["errors"][0]["field"] == "items[5]"
    assert items[6]["problem"]["errors"][0]["field"] == "items[6].idempotency_key"
    assert items[7]["status"] == 201
    assert len(await runs(api)) == 4  # three, then one more: the bad items started nothing


async def test_a_value_jsonb_cannot_hold_spoils_only_its_item(api: Harness) -> None:
    await upload(api)
    body = ('{"items": [{"input": {"x": NaN}}, {"input": {"t": "a\\u0000b"}}, '
            '{"input": {"ok": true}}]}')
    response = await api.client.post(BATCH, content=body, headers={
        **api.as_("alice"), "Content-Type": "application/json"})
    assert response.status_code == 207, response.text
    items = response.json()["items"]
    assert [i["status"] for i in items] == [422, 422, 201]
    assert items[0]["problem"]["errors"][0]["field"] == "items[0].input.x"
    assert items[1]["problem"]["errors"][0]["field"] == "items[1].input.t"


async def test_a_malformed_request_is_one_problem_and_changes_nothing(api: Harness) -> None:
    await upload(api)
    for body, field in (({"items": {}}, "items"), ({"runs": []}, "runs"), ([], None)):
        response = await api.client.post(BATCH, json=body, headers=api.as_("alice"))
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        if field:
            assert response.json()["errors"][0]["field"] == field
    for count in (0, 1001):
        response = await api.client.post(BATCH, json={"items": [{}] * count},
                                         headers=api.as_("alice"))
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "items"
    assert await runs(api) == []


async def test_a_thousand_runs_in_one_call(api: Harness) -> None:
    await upload(api)
    out = await batch(api, [{"input": {"i": i}, "idempotency_key": f"k{i}"}
                            for i in range(1000)])
    assert [i["status"] for i in out["items"]] == [201] * 1000
    again = await batch(api, [{"input": {"i": i}, "idempotency_key": f"k{i}"}
                              for i in range(1000)])
    assert [i["status"] for i in again["items"]] == [200] * 1000


async def test_a_batch_sees_and_starts_only_its_tenant(api: Harness) -> None:
    await upload(api)
    await upload(api, "mallory", "acme")
    mine = await batch(api, [{"input": {"secret": 1}, "idempotency_key": "shared"}])
    theirs = await batch(api, [{"input": {"secret": 2}, "idempotency_key": "shared"}],
                         who="mallory", tenant="acme")
    # the same key in another tenant is another run, never a replay of (or a conflict
    # with) this tenant's
    assert theirs["items"][0]["status"] == 201
    assert theirs["items"][0]["run"]["run_id"] != mine["items"][0]["run"]["run_id"]
    assert [r["input"] for r in await runs(api, "mallory", "acme")] == [{"secret": 2}]
    # a key not granted the tenant is refused before anything
    response = await api.client.post(BATCH, json={"items": [{"input": {}}]},
                                     headers=api.as_("mallory", "default"))
    assert response.status_code == 403
    assert [r["input"] for r in await runs(api)] == [{"secret": 1}]


async def test_only_a_submitter_starts(api: Harness) -> None:
    await upload(api)
    response = await api.client.post(BATCH, json={"items": [{"input": {}}]},
                                     headers=api.as_("bob"))
    assert response.status_code == 403
