"""What an operator asks at 3 a.m., over HTTP: why is it stuck, what failed, who rejected
it, which runs match; one shape for every list."""

from __future__ import annotations

from typing import Any

import pytest

from engine.store import workers as workers_q
from tests import support
from tests.api.conftest import Harness
from tests.api.worlds import SEED_YAML, YAML, drive_to_rest

pytestmark = pytest.mark.anyio

V1 = "/api/v1"
LONELY = """
id: lonely
name: one job nobody takes
version: 1.0.0
steps:
  escalate: {type: job, topic: job.incident.escalate, retries: {max_attempts: 1}}
"""
# allows the seed's topics by rule; anything else falls to the default, which denies
ALLOW_SEED = """
default_decision: deny
default_reason: nothing runs unless a rule allows it
rules:
  - name: seed-topics
    match: {topics: ["job.incident.detect", "job.incident.classify", "job.incident.patch.*"]}
    decision: allow
    reason: the remediation steps
"""


async def _store(api: Harness, source: str) -> None:
    stored = await api.client.post(f"{V1}/workflows", content=source,
                                   headers={**api.as_("alice"), **YAML})
    assert stored.status_code in (200, 201), stored.text


async def _start(api: Harness, workflow_id: str, input: dict[str, Any] | None = None, *,
                 key: str | None = None, status: int = 201) -> dict[str, Any]:
    headers = {**api.as_("alice"), **({"Idempotency-Key": key} if key else {})}
    started = await api.client.post(f"{V1}/workflows/{workflow_id}/runs",
                                    json={"input": input or {}}, headers=headers)
    assert started.status_code == status, started.text
    doc: dict[str, Any] = started.json()
    return doc


async def _run(api: Harness, run_id: str) -> dict[str, Any]:
    shown = await api.client.get(f"{V1}/workflow-runs/{run_id}", headers=api.as_("olga"))
    assert shown.status_code == 200, shown.text
    doc: dict[str, Any] = shown.json()
    return doc


async def test_a_job_nobody_takes_is_pending_and_says_no_live_worker_polls_its_topic(
        api: Harness) -> None:
    await _store(api, LONELY)
    started = await _start(api, "lonely")
    assert started["replayed"] is False and started["steps"][0]["step_id"] == "escalate"
    await support.settle(api.scheduler)
    doc = await _run(api, started["run_id"])
    [step] = doc["steps"]
    assert (doc["status"], step["status"], step["state"]) == ("running", "running", "pending")
    assert step["note"] == "pending: no live worker polls topic job.incident.escalate"
    assert "no live worker polls topic job.incident.escalate" in doc["summary"]
    metrics = (await api.client.get("/metrics")).text
    assert 'warden_jobs_unattended{topic="job.incident.escalate"} 1.0' in metrics
    queues = (await api.client.get(f"{V1}/queues", headers=api.as_("olga"))).json()
    [queue] = [q for q in queues["items"] if q["topic"] == "job.incident.escalate"]
    assert (queue["depth"], queue["live_workers"], queue["unattended"]) == (1, 0, True)
    async with api.svc.db.connection() as conn:
        await workers_q.register(conn, name="w-escalate", host="h", pid=7,
                                 topics=["job.incident.escalate"], concurrency=2,
                                 version="test", heartbeat_ms=60_000)
    doc = await _run(api, started["run_id"])
    assert doc["steps"][0]["note"] == "pending: 1 live worker polls topic job.incident.escalate"
    assert "warden_jobs_unattended{" not in (await api.client.get("/metrics")).text
    workers = (await api.client.get(f"{V1}/workers", headers=api.as_("olga"))).json()
    assert [(w["name"], w["state"], w["topics"]) for w in workers["items"]] == [
        ("w-escalate", "live", ["job.incident.escalate"])]
    assert workers["next_cursor"] is None
    refused = await api.client.get(f"{V1}/workers", headers=api.as_("alice"))
    assert refused.status_code == 403
    bad = await api.client.get(f"{V1}/workers", params={"all": "maybe"},
                               headers=api.as_("olga"))
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "all"
    # the queue counts only the caller's tenant's jobs; the workers polling it are shared
    other = (await api.client.get(f"{V1}/queues", headers=api.as_("root", "acme"))).json()
    assert [(q["topic"], q["depth"], q["live_workers"]) for q in other["items"]] == [
        ("job.incident.escalate", 0, 1)]


async def test_a_failed_run_says_the_exception_type_and_message(api: Harness) -> None:
    await _store(api, LONELY)
    started = await _start(api, "lonely")
    await support.settle(api.scheduler)
    [job] = await support.claim(api.svc.db, ["job.incident.escalate"])
    async with api.svc.db.connection() as conn:
        from engine.store import jobs as jobs_q

        await jobs_q.fail(conn, job_id=job.job_id, lease_token=job.lease_token,
                          error={"type": "KeyError", "message": "'plan'",
                                 "traceback": "Traceback …\nKeyError: 'plan'\n"},
                          retryable=False)
    await support.settle(api.scheduler)
    doc = await _run(api, started["run_id"])
    assert doc["status"] == "failed"
    assert doc["summary"] == "Failed at step escalate: KeyError: 'plan'"
    assert doc["steps"][0]["note"] == "KeyError: 'plan'"
    listed = (await api.client.get(f"{V1}/workflow-runs", params={"status": "failed"},
                                   headers=api.as_("olga"))).json()
    assert [r["summary"] for r in listed["items"]] == [doc["summary"]]


async def test_a_rejection_needs_a_reason_and_is_told_apart_from_a_policy_denial(
        api: Harness) -> None:
    await _store(api, SEED_YAML)
    await _store(api, LONELY)
    rejected_run = await _start(api, "incident-remediation", {"incident_id": "INC-1"})
    rested = await drive_to_rest(api, rejected_run["run_id"], api.as_("olga"))
    [gate] = rested["approvals"]
    assert set(gate) >= {"approval_id"} and "id" not in gate  # one id field
    queue = (await api.client.get(f"{V1}/approvals", headers=api.as_("bob"))).json()
    [item] = queue["items"]
    assert (item["approval_id"], item["topic"], item["then"], item["run_status"]) == (
        gate["approval_id"], None, ["apply_patch", "notify"], "waiting")
    assert item["summary"] == ("step approval_gate of incident-remediation@1.1.0, then "
                               "apply_patch, notify")
    url = f"{V1}/approvals/{gate['approval_id']}/reject"
    for body in ({}, {"reason": "  "}, {"reason": None}):
        refused = await api.client.post(url, json=body, headers=api.as_("bob"))
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["field"] == "reason"
    empty = await api.client.post(url, headers=api.as_("bob"))
    assert empty.status_code == 422
    assert (await _run(api, rejected_run["run_id"]))["approvals"][0]["status"] == "pending"
    done = await api.client.post(url, json={"reason": "too risky"}, headers=api.as_("bob"))
    assert done.status_code == 200, done.text
    await support.settle(api.scheduler)
    rejected = await _run(api, rejected_run["run_id"])
    assert (rejected["status"], rejected["denied_by"]) == ("denied", "approval")
    assert rejected["summary"] == "Denied at step approval_gate: rejected by bob: too risky"
    # now a policy whose default denies: a step no rule allows is denied at submit
    stored = await api.client.post(f"{V1}/policy/bundles", content=ALLOW_SEED,
                                   headers={**api.as_("root"), **YAML})
    digest = stored.json()["snapshot_hash"]
    await api.client.post(f"{V1}/policy/snapshots/{digest}/activate", headers=api.as_("root"))
    denied = await api.client.post(f"{V1}/workflows/lonely/runs", json={"input": {}},
                                   headers={**api.as_("alice"), "Idempotency-Key": "d-1"})
    assert denied.status_code == 403
    problem = denied.json()
    assert "rule None" not in problem["detail"] and problem["rule"] is None
    assert "the default decision (no rule matched)" in problem["detail"]
    denied_doc = await _run(api, problem["run_id"])
    assert (denied_doc["status"], denied_doc["denied_by"]) == ("denied", "policy")
    assert denied_doc["summary"] == ("Denied at step escalate: denied by policy (the default "
                                     "decision): nothing runs unless a rule allows it")

    async def ids(**params: str) -> list[str]:
        page = await api.client.get(f"{V1}/workflow-runs", params=params,
                                    headers=api.as_("olga"))
        assert page.status_code == 200, page.text
        return [r["run_id"] for r in page.json()["items"]]

    assert await ids(status="denied") == [problem["run_id"], rejected_run["run_id"]]
    assert await ids(status="denied", denied_by="policy") == [problem["run_id"]]
    assert await ids(denied_by="approval") == [rejected_run["run_id"]]


async def test_runs_are_found_by_prefix_input_field_key_and_time_in_pages(
        api: Harness) -> None:
    await _store(api, SEED_YAML)
    made = [await _start(api, "incident-remediation", {"incident_id": f"INC-{n}",
                                                       "severity": n, "meta": {"team": "a"}},
                         key=f"key-{n}") for n in range(3)]
    run_ids = [m["run_id"] for m in made]

    async def ids(params: dict[str, str]) -> list[str]:
        page = await api.client.get(f"{V1}/workflow-runs", params=params,
                                    headers=api.as_("olga"))
        assert page.status_code == 200, page.text
        return [r["run_id"] for r in page.json()["items"]]

    newest_first = run_ids[::-1]
    assert await ids({}) == newest_first
    assert await ids({"id_prefix": run_ids[1][:8]}) == [run_ids[1]]
    assert await ids({"input.incident_id": "INC-2"}) == [run_ids[2]]
    assert await ids({"input.severity": "1"}) == [run_ids[1]]  # a JSON number
    assert await ids({"input.severity": '"1"'}) == []  # the string "1" is another value
    assert await ids({"input.meta.team": "a", "input.incident_id": "INC-0"}) == [run_ids[0]]
    assert await ids({"idempotency_key": "key-1"}) == [run_ids[1]]
    created = made[1]["created_at"]
    assert await ids({"created_after": created}) == newest_first[:2]
    assert await ids({"created_before": created}) == [run_ids[0]]
    assert await ids({"created_after": "2999-01-01T00:00:00"}) == []
    # pages: the cursor carries on under the same filters
    first = (await api.client.get(f"{V1}/workflow-runs", params={"limit": "2"},
                                  headers=api.as_("olga"))).json()
    assert [r["run_id"] for r in first["items"]] == newest_first[:2]
    assert await ids({"limit": "2", "cursor": first["next_cursor"]}) == newest_first[2:]
    # bad filters: 400 naming the parameter, nothing found by accident
    for params, field in (({"id_prefix": "xyz"}, "id_prefix"),
                          ({"id_prefix": "ab"}, "id_prefix"),
                          ({"created_after": "yesterday"}, "created_after"),
                          ({"denied_by": "martians"}, "denied_by"),
                          ({"status": "stuck"}, "status"),
                          ({"input.": "x"}, "input."),
                          ({"inputs.x": "1"}, "inputs.x")):
        bad = await api.client.get(f"{V1}/workflow-runs", params=params,
                                   headers=api.as_("olga"))
        assert bad.status_code == 400, (params, bad.text)
        assert bad.json()["errors"][0]["field"] == field, params


async def test_start_and_rerun_answer_one_shape_and_steps_keep_definition_order(
        api: Harness) -> None:
    fan = """
id: fan
name: fan-out in the author's order
version: 1.0.0
steps:
  zeta: {type: job, topic: job.incident.detect}
  alpha: {type: job, topic: job.incident.detect}
  mid: {type: job, topic: job.incident.detect}
  last_one: {type: notify, depends_on: [zeta, alpha, mid]}
"""
    await _store(api, fan)
    started = await _start(api, "fan", key="fan-1")
    assert [s["step_id"] for s in started["steps"]] == ["zeta", "alpha", "mid", "last_one"]
    replay = await _start(api, "fan", key="fan-1", status=200)
    assert replay["replayed"] is True and replay["run_id"] == started["run_id"]
    await drive_to_rest(api, started["run_id"], api.as_("olga"))
    rerun = await api.client.post(f"{V1}/workflow-runs/{started['run_id']}/rerun",
                                  json={"from_step": "alpha"}, headers=api.as_("olga"))
    assert rerun.status_code == 201, rerun.text
    doc = rerun.json()
    assert set(started) <= set(doc)  # the start's shape, plus the plan
    assert doc["replayed"] is False and doc["rerun_of"] == started["run_id"]
    assert doc["plan"]["to_run"] == ["alpha", "last_one"]
    assert [s["step_id"] for s in doc["steps"]] == ["zeta", "alpha", "mid", "last_one"]
    reruns = await api.client.get(f"{V1}/workflow-runs", params={"rerun_of": started["run_id"]},
                                  headers=api.as_("olga"))
    assert [r["run_id"] for r in reruns.json()["items"]] == [doc["run_id"]]
    bad = await api.client.get(f"{V1}/workflow-runs", params={"rerun_of": "nope"},
                               headers=api.as_("olga"))
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "rerun_of"


async def test_a_retry_waiting_for_its_backoff_and_a_cancel_read_as_such(api: Harness) -> None:
    await _store(api, LONELY.replace("id: lonely", "id: patient").replace(
        "retries: {max_attempts: 1}", "retries: {max_attempts: 2, backoff_ms: 600000}"))
    started = await _start(api, "patient")
    await support.settle(api.scheduler)
    [job] = await support.claim(api.svc.db, ["job.incident.escalate"])
    await support.fail(api.svc.db, job)  # retryable: the next attempt waits ten minutes
    await support.settle(api.scheduler)
    doc = await _run(api, started["run_id"])
    [step] = doc["steps"]
    assert (step["status"], step["state"]) == ("running", "retry_scheduled"), step
    assert "no live worker" not in (step["note"] or "") and step["note"]
    cancelled = await api.client.post(f"{V1}/workflow-runs/{started['run_id']}/cancel",
                                      json={"reason": "enough"}, headers=api.as_("olga"))
    assert cancelled.status_code == 202
    assert cancelled.json()["summary"] == "Cancelled by olga: enough"
