"""The REST API end to end: the seed's curl calls, a whole run driven over HTTP, errors."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import pytest

from engine.core.resources import package_file
from tests import support
from tests.api.conftest import Harness

pytestmark = pytest.mark.anyio

SEED_YAML = package_file("examples/incident-remediation.yaml").read_text()
YAML = {"Content-Type": "application/yaml"}
JSON = {"Content-Type": "application/json"}


async def upload(api: Harness, source: str = SEED_YAML) -> dict[str, Any]:
    response = await api.client.post("/api/v1/workflows", content=source,
                                     headers={**api.as_("alice"), **YAML})
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


async def work_until_waiting_or_done(api: Harness, run_id: str) -> str:
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
        response = await api.client.get(f"/api/v1/workflow-runs/{run_id}",
                                         headers=api.as_("alice"))
        status = str(response.json()["status"])
        if not claimed and status in ("waiting", "succeeded", "failed", "denied"):
            return status
    raise AssertionError("the run never came to rest")


async def test_the_seed_curl_calls_work_verbatim(api: Harness) -> None:
    wf = await upload(api)
    assert (wf["workflow_id"], wf["version"]) == ("incident-remediation", "1.1.0")
    # curl -X POST …/workflows/WF_ID/runs -H 'Idempotency-Key: run-incident-001' …
    headers = {**api.as_("alice"), "Idempotency-Key": "run-incident-001", **JSON}
    body = '{"input":{"incident_id":"INC-7781"}}'
    created = await api.client.post("/api/v1/workflows/incident-remediation/runs",
                                    content=body, headers=headers)
    assert created.status_code == 201, created.text
    run_id = created.json()["run_id"]
    assert created.headers["Location"] == f"/api/v1/workflow-runs/{run_id}"
    replay = await api.client.post("/api/v1/workflows/incident-remediation/runs",
                                   content=body, headers=headers)
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["run_id"] == run_id
    other = await api.client.post("/api/v1/workflows/incident-remediation/runs",
                                  content='{"input":{"incident_id":"INC-1"}}', headers=headers)
    assert other.status_code == 409
    assert other.headers["Content-Type"] == "application/problem+json"
    # curl …/workflow-runs/RUN_ID
    shown = await api.client.get(f"/api/v1/workflow-runs/{run_id}", headers=api.as_("alice"))
    assert shown.status_code == 200
    assert [s["step_id"] for s in shown.json()["steps"]][:2] == ["detect", "classify"]
    # drive it to the end; the approver is another principal
    assert await work_until_waiting_or_done(api, run_id) == "waiting"
    queue = await api.client.get("/api/v1/approvals?status=pending", headers=api.as_("bob"))
    [approval] = queue.json()["items"]
    seen = await api.client.get(f"/api/v1/approvals/{approval['approval_id']}",
                                headers=api.as_("bob"))
    decided = await api.client.post(
        f"/api/v1/approvals/{approval['approval_id']}/approve",
        headers={**api.as_("bob"), **JSON},
        content=json.dumps({"reason": "plan reviewed", "job_hash": seen.json()["job_hash"]}))
    assert decided.status_code == 200 and decided.json()["status"] == "approved"
    assert await work_until_waiting_or_done(api, run_id) == "succeeded"
    # curl "…/workflow-runs/RUN_ID/timeline?limit=200"
    timeline = await api.client.get(f"/api/v1/workflow-runs/{run_id}/timeline?limit=200",
                                    headers=api.as_("alice"))
    events = timeline.json()["items"]
    assert events[0]["kind"] == "run.created" and events[-1]["kind"] == "run.succeeded"
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(events))
    # curl -X POST …/rerun -d '{"from_step":"apply_patch","dry_run":false}'
    rerun = await api.client.post(f"/api/v1/workflow-runs/{run_id}/rerun",
                                  headers={**api.as_("olga"), **JSON},
                                  content='{"from_step":"apply_patch","dry_run":false}')
    assert rerun.status_code == 201, rerun.text
    new_run = rerun.json()  # the run document, as a start answers, with its plan
    assert new_run["replayed"] is False and new_run["steps"][0]["step_id"] == "detect"
    assert new_run["rerun_of"] == run_id
    # apply_patch runs again, so the gate it sits behind is asked again (docs/recovery.md)
    assert rerun.json()["plan"]["to_run"] == ["approval_gate", "apply_patch", "notify"]
    assert rerun.json()["plan"]["barred_approvers"] == ["alice", "olga"]
    first = await api.client.get(f"/api/v1/workflow-runs/{new_run['run_id']}/timeline?limit=1",
                                 headers=api.as_("olga"))
    [link] = first.json()["items"]
    assert (link["kind"], link["data"]["rerun_of"]) == ("run.rerun", run_id)
    assert await work_until_waiting_or_done(api, new_run["run_id"]) == "waiting"
    queue = await api.client.get("/api/v1/approvals?status=pending", headers=api.as_("bob"))
    [again] = queue.json()["items"]
    assert (again["run_id"], again["barred"]) == (new_run["run_id"], ["alice", "olga"])


async def test_whoever_started_the_original_cannot_approve_the_reruns_gate(
        api: Harness) -> None:
    """root (admin: may submit and approve) starts a run, bob approves its gate; olga
    reruns it from apply_patch. The rerun asks the gate again, and root may not answer."""
    await upload(api)
    created = await api.client.post("/api/v1/workflows/incident-remediation/runs",
                                    json={"input": {"incident_id": "I"}},
                                    headers=api.as_("root"))
    run_id = created.json()["run_id"]
    assert await work_until_waiting_or_done(api, run_id) == "waiting"
    [gate] = (await api.client.get("/api/v1/approvals?status=pending",
                                   headers=api.as_("bob"))).json()["items"]
    ok = await api.client.post(f"/api/v1/approvals/{gate['approval_id']}/approve", json={},
                               headers=api.as_("bob"))
    assert ok.status_code == 200, ok.text
    assert await work_until_waiting_or_done(api, run_id) == "succeeded"
    rerun = await api.client.post(f"/api/v1/workflow-runs/{run_id}/rerun",
                                  json={"from_step": "apply_patch"}, headers=api.as_("olga"))
    rerun_id = rerun.json()["run_id"]
    assert await work_until_waiting_or_done(api, rerun_id) == "waiting"
    [again] = (await api.client.get("/api/v1/approvals?status=pending",
                                    headers=api.as_("bob"))).json()["items"]
    assert again["run_id"] == rerun_id and again["approval_id"] != gate["approval_id"]
    refused = await api.client.post(f"/api/v1/approvals/{again['approval_id']}/approve", json={},
                                    headers=api.as_("root"))
    assert refused.status_code == 403
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert f"'root' started run {run_id}, which run {rerun_id} reruns" in \
        refused.json()["detail"]
    shown = await api.client.get(f"/api/v1/approvals/{again['approval_id']}",
                                 headers=api.as_("bob"))
    assert (shown.json()["status"], shown.json()["decided_by"]) == ("pending", None)
    # the original's approval is spent: it cannot be decided again for the rerun
    spent = await api.client.post(f"/api/v1/approvals/{gate['approval_id']}/approve", json={},
                                  headers=api.as_("bob"))
    assert spent.status_code == 409
    decided = await api.client.post(f"/api/v1/approvals/{again['approval_id']}/approve", json={},
                                    headers=api.as_("bob"))
    assert decided.status_code == 200, decided.text
    assert await work_until_waiting_or_done(api, rerun_id) == "succeeded"


async def test_rerun_dry_run_writes_nothing_and_returns_the_plan(api: Harness) -> None:
    await upload(api)
    created = await api.client.post("/api/v1/workflows/incident-remediation/runs",
                                    json={"input": {"incident_id": "I"}},
                                    headers=api.as_("alice"))
    run_id = created.json()["run_id"]
    async with api.svc.db.connection() as conn:
        before = await (await conn.execute("SELECT count(*) FROM warden.runs")).fetchone()
    plan = await api.client.post(f"/api/v1/workflow-runs/{run_id}/rerun",
                                 json={"from_step": "classify", "dry_run": True},
                                 headers=api.as_("olga"))
    assert plan.status_code == 200, plan.text
    doc = plan.json()
    assert doc["dry_run"] is True and doc["to_run"][0] == "detect"  # detect never succeeded
    assert doc["decisions"]["classify"]["decision"] == "allow"
    assert "approval_gate" in doc["approvals_needed"]
    async with api.svc.db.connection() as conn:
        after = await (await conn.execute("SELECT count(*) FROM warden.runs")).fetchone()
    assert before == after
    unknown = await api.client.post(f"/api/v1/workflow-runs/{run_id}/rerun",
                                    json={"from_step": "nope"}, headers=api.as_("olga"))
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"] == "from_step"


async def test_cancel_answers_202_and_the_run_ends_cancelled(api: Harness) -> None:
    await upload(api)
    created = await api.client.post("/api/v1/workflows/incident-remediation/runs",
                                    json={"input": {}}, headers=api.as_("alice"))
    run_id = created.json()["run_id"]
    await support.settle(api.scheduler)
    cancelled = await api.client.post(f"/api/v1/workflow-runs/{run_id}/cancel",
                                      json={"reason": "test"}, headers=api.as_("olga"))
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    again = await api.client.post(f"/api/v1/workflow-runs/{run_id}/cancel",
                                  headers=api.as_("olga"))
    assert again.status_code == 409
    jobs = await api.client.get("/api/v1/jobs?status=cancelled", headers=api.as_("olga"))
    assert [j["step_id"] for j in jobs.json()["items"]] == ["detect"]


async def test_errors_are_problem_documents_and_bad_input_changes_nothing(api: Harness) -> None:
    missing = await api.client.get("/api/v1/workflow-runs")
    assert missing.status_code == 401
    assert missing.headers["Content-Type"] == "application/problem+json"
    assert set(missing.json()) >= {"type", "title", "status", "detail"}
    bad_key = await api.client.get("/api/v1/workflow-runs",
                                   headers={"X-API-Key": "wdn_0000000000000000_nope"})
    assert bad_key.status_code == 401
    wrong_role = await api.client.post("/api/v1/workflows", content=SEED_YAML,
                                       headers={**api.as_("bob"), **YAML})
    assert wrong_role.status_code == 403
    not_granted = await api.client.get("/api/v1/workflow-runs", headers=api.as_("alice", "acme"))
    assert not_granted.status_code == 403
    invalid = await api.client.post("/api/v1/workflows", headers={**api.as_("alice"), **YAML},
                                    content="id: x\nname: x\nversion: 1.0.0\nsteps:\n"
                                            "  a: {type: job, topic: t, depends_on: [b]}\n"
                                            "  b: {type: job, topic: t, depends_on: [a]}\n")
    assert invalid.status_code == 422
    assert any("cycle" in e["message"] for e in invalid.json()["errors"])
    unknown_param = await api.client.get("/api/v1/workflow-runs?sort=created_at",
                                         headers=api.as_("alice"))
    assert unknown_param.status_code == 400
    not_uuid = await api.client.get("/api/v1/workflow-runs/not-a-uuid", headers=api.as_("alice"))
    assert not_uuid.status_code == 404
    async with api.svc.db.connection() as conn:
        stored = await (await conn.execute("SELECT count(*) FROM warden.workflows")).fetchone()
    assert stored == (0,)


async def test_oversize_deep_and_bomb_bodies_are_refused(api: Harness) -> None:
    await upload(api)
    url = "/api/v1/workflows/incident-remediation/runs"
    huge = '{"input": {"blob": "' + "x" * 70_000 + '"}}'
    too_big = await api.client.post(url, content=huge, headers={**api.as_("alice"), **JSON})
    assert too_big.status_code == 413
    deep = '{"input": ' + "[" * 5000 + "]" * 5000 + "}"
    too_deep = await api.client.post(url, content=deep, headers={**api.as_("alice"), **JSON})
    assert too_deep.status_code == 400 and "nested" in too_deep.json()["detail"]
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" \
           "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c]\n"
    began = time.monotonic()
    refused = await api.client.post("/api/v1/workflows", content=bomb,
                                    headers={**api.as_("alice"), **YAML})
    assert refused.status_code == 422 and time.monotonic() - began < 1.0
    not_json = await api.client.post(url, content="{oops", headers={**api.as_("alice"), **JSON})
    assert not_json.status_code == 400


async def test_sixteen_concurrent_posts_with_one_key_make_one_run(api: Harness) -> None:
    await upload(api)
    url = "/api/v1/workflows/incident-remediation/runs"
    headers = {**api.as_("alice"), "Idempotency-Key": "storm"}
    same = await asyncio.gather(*(api.client.post(url, json={"input": {"n": 1}},
                                                  headers=headers) for _ in range(16)))
    assert sorted(r.status_code for r in same) == [200] * 15 + [201]
    assert len({r.json()["run_id"] for r in same}) == 1
    different = await asyncio.gather(*(api.client.post(url, json={"input": {"n": i}},
                                                       headers=headers) for i in range(2, 10)))
    assert {r.status_code for r in different} == {409}


async def test_policy_endpoints_store_activate_and_evaluate(api: Harness) -> None:
    bundle = ("default_decision: allow\nrules:\n  - name: no-prod\n    match: {risk_tags: [prod]}"
              "\n    decision: deny\n    reason: not today\n")
    stored = await api.client.post("/api/v1/policy/bundles", content=bundle,
                                   headers={**api.as_("root"), **YAML})
    assert stored.status_code == 201, stored.text
    digest = stored.json()["snapshot_hash"]
    again = await api.client.post("/api/v1/policy/bundles", content=bundle,
                                  headers={**api.as_("root"), **YAML})
    assert again.status_code == 200 and again.json()["snapshot_hash"] == digest
    activated = await api.client.post(f"/api/v1/policy/snapshots/{digest}/activate",
                                      headers=api.as_("root"))
    assert activated.status_code == 200 and activated.json()["previous_hash"] is None
    listed = await api.client.get("/api/v1/policy/snapshots", headers=api.as_("root"))
    assert listed.json()["active"] == digest
    evaluated = await api.client.post("/api/v1/policy/evaluate", headers=api.as_("root"),
                                      json={"topic": "t", "risk_tags": ["prod"]})
    assert evaluated.json() == {"decision": "deny", "rule": "no-prod", "reason": "not today",
                                "constraints": {}, "snapshot_hash": digest}
    forbidden = await api.client.post("/api/v1/policy/bundles", content=bundle,
                                      headers={**api.as_("alice"), **YAML})
    assert forbidden.status_code == 403


async def test_health_and_openapi_describe_every_route(api: Harness) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    assert (await api.client.get("/api/v1/readyz")).status_code == 200
    await upload(api)
    await api.client.post("/api/v1/workflows/incident-remediation/runs", json={"input": {}},
                          headers=api.as_("alice"))
    await support.settle(api.scheduler)
    metrics = await api.client.get("/metrics")
    assert 'warden_runs{status="running"} 1' in metrics.text
    assert 'warden_jobs_unclaimed{topic="job.incident.detect"} 0' in metrics.text
    assert 'warden_oldest_claimable_seconds{topic="job.incident.detect"}' in metrics.text
    spec = (await api.client.get("/openapi.json")).json()
    from api.app import PREFIX
    from api.registry import ENDPOINTS
    described = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert described == {(PREFIX + e.path, e.method.lower()) for e in ENDPOINTS}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op["responses"], (path, method)
