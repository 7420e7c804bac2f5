"""Flow control through the API: schedules (list, pause, resume), run priority at start,
a gated job's explanation and the gates' /metrics (docs/workflows.md)."""

from __future__ import annotations

import pytest

from tests import support
from tests.api.conftest import Harness
from tests.api.test_metrics import scrape, value

pytestmark = pytest.mark.anyio

CRONNED = """
id: cronned
name: cronned
version: 1.0.0
schedules:
  - {name: nightly, cron: "0 3 * * *", timezone: Europe/Paris, input: {full: true}}
steps:
  work:
    type: job
    topic: t.api.gated
    concurrency: {key: "${input.provider}", limit: 1}
"""


async def _store(api: Harness, source: str, tenant: str = "default") -> None:
    response = await api.client.post("/api/v1/workflows", content=source,
                                     headers={**api.as_("alice", tenant),
                                              "Content-Type": "application/yaml"})
    assert response.status_code in (200, 201), response.text


async def test_schedules_are_listed_paused_and_resumed(api: Harness) -> None:
    await _store(api, CRONNED)
    listed = await api.client.get("/api/v1/schedules", headers=api.as_("olga"))
    assert listed.status_code == 200, listed.text
    [item] = listed.json()["items"]
    assert (item["name"], item["cron"], item["timezone"]) == ("nightly", "0 3 * * *",
                                                             "Europe/Paris")
    assert len(item["next_ticks"]) == 3 and not item["paused"]
    paused = await api.client.post("/api/v1/schedules/cronned/nightly/pause",
                                   headers=api.as_("olga"))
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] and paused.json()["next_ticks"] == []
    assert paused.json()["paused_by"] == "olga"
    # a submitter may read, not pause; another tenant's operator does not see it
    assert (await api.client.post("/api/v1/schedules/cronned/nightly/resume",
                                  headers=api.as_("alice"))).status_code == 403
    other = await api.client.post("/api/v1/schedules/cronned/nightly/resume",
                                  headers=api.as_("mallory", "acme"))
    assert other.status_code == 404, other.text
    assert (await api.client.get("/api/v1/schedules",
                                 headers=api.as_("mallory", "acme"))).json()["items"] == []
    resumed = await api.client.post("/api/v1/schedules/cronned/nightly/resume",
                                    headers=api.as_("olga"))
    assert resumed.status_code == 200 and len(resumed.json()["next_ticks"]) == 3
    missing = await api.client.post("/api/v1/schedules/cronned/daily/pause",
                                    headers=api.as_("olga"))
    assert missing.status_code == 404
    assert "no schedule 'daily'" in missing.json()["detail"]


async def test_a_bad_schedule_is_a_422_naming_the_field(api: Harness) -> None:
    response = await api.client.post(
        "/api/v1/workflows", content=CRONNED.replace("Europe/Paris", "Mars/Olympus"),
        headers={**api.as_("alice"), "Content-Type": "application/yaml"})
    assert response.status_code == 422, response.text
    fields = [e["field"] for e in response.json()["errors"]]
    assert fields == ["schedules[0].timezone"]


async def test_priority_at_start_and_a_gated_job_explained(api: Harness) -> None:
    await _store(api, CRONNED)
    bad = await api.client.post("/api/v1/workflows/cronned/runs", headers=api.as_("alice"),
                                json={"input": {"provider": "openai"}, "priority": 12})
    assert bad.status_code in (400, 422), bad.text
    run_ids = []
    for priority in (3, 1):
        started = await api.client.post("/api/v1/workflows/cronned/runs",
                                        headers=api.as_("alice"),
                                        json={"input": {"provider": "openai"},
                                              "priority": priority})
        assert started.status_code == 201, started.text
        run_ids.append(started.json()["run_id"])
    await support.settle(api.scheduler)
    [claimed] = await support.claim(api.svc.db, ["t.api.gated"], n=5)
    assert str(claimed.run_id) == run_ids[1]  # priority 1 before priority 3
    detail = await api.client.get(f"/api/v1/workflow-runs/{run_ids[0]}",
                                  headers=api.as_("alice"))
    step = detail.json()["steps"][0]
    assert step["note"] == "waiting for concurrency key openai (1/1 running)"
    assert detail.json()["jobs"][0]["concurrency"] == {"key": "openai", "limit": 1}
    samples = await scrape(api)
    labels = {"tenant": "default", "key": "openai"}
    assert value(samples, "warden_concurrency_running", **labels) == 1
    assert value(samples, "warden_concurrency_limit", **labels) == 1
    assert value(samples, "warden_throttled_jobs", kind="concurrency", **labels) == 1

