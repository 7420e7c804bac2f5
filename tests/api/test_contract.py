"""The API keeps the contract it publishes at /openapi.json.

Every response of every request in this module is checked against the served document
(`tests/api/contract.py`): a walk through every route with the answers a client relies
on, then a bounded schemathesis fuzz generated from the same document, which must never
make the server fail (5xx).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from api.app import PREFIX
from api.registry import ENDPOINTS
from tests.api.conftest import Harness
from tests.api.contract import (
    ContractRecorder,
    ContractViolation,
    assert_conforms,
    template_for,
    validate_body,
)
from tests.api.worlds import YAML, bounded, build, call, definition, drive_to_rest

pytestmark = pytest.mark.anyio

JSON = {"Content-Type": "application/json"}
POLICY = """\
default_decision: allow
rules:
  - name: review-patches
    match: {topics: ["job.incident.patch.apply"]}
    decision: require_approval
    reason: a human reads every patch
  - name: never-this-one
    match: {workflows: ["forbidden-flow"]}
    decision: deny
    reason: retired
"""


@pytest.fixture(autouse=True)
async def contract(api: Harness) -> AsyncIterator[ContractRecorder]:
    """Every response of every test here must match the served OpenAPI document."""
    recorder = ContractRecorder((await api.client.get("/openapi.json")).json())
    recorder.install(api.client)
    yield recorder
    recorder.check()


# --- the checker itself -----------------------------------------------------------------


def fake(status: int, body: Any, media: str = "application/json",
         path: str = f"{PREFIX}/workflow-runs") -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode(),
                          headers={"Content-Type": media},
                          request=httpx.Request("GET", f"http://test{path}"))


@bounded(10)
async def test_the_checker_catches_what_it_should(contract: ContractRecorder) -> None:
    spec = contract.spec
    runs = f"{PREFIX}/workflow-runs"
    timeline = f"{runs}/{{run_id}}/timeline"
    assert template_for(spec, f"{PREFIX}/workflow-runs/abc/timeline") == timeline
    assert template_for(spec, "/healthz") == f"{PREFIX}/healthz"
    assert template_for(spec, f"{PREFIX}/nowhere") is None
    assert_conforms(spec, "GET", runs, fake(200, {"items": [], "next_cursor": None}))
    problem = {"type": "t", "title": "t", "status": 404, "detail": "d"}
    assert_conforms(spec, "GET", runs, fake(404, problem, "application/problem+json"))
    bad_run = {"run_id": "r", "workflow_id": "w", "workflow_version": "1", "input": {},
               "status": "exploded", "created_at": "yesterday"}
    failures = {
        "missing field": fake(200, {"next_cursor": None}),
        "wrong item": fake(200, {"items": [bad_run], "next_cursor": None}),
        "undeclared status": fake(418, problem, "application/problem+json"),
        "undeclared success": fake(202, {"items": []}),
        "error not a problem": fake(404, problem),
        "problem status differs": fake(400, problem, "application/problem+json"),
        "problem incomplete": fake(400, {"status": 400}, "application/problem+json"),
        "wrong media": fake(200, {"items": []}, "text/html"),
    }
    for why, response in failures.items():
        with pytest.raises(ContractViolation):
            assert_conforms(spec, "GET", runs, response)
            raise AssertionError(f"{why} was not caught")
    with pytest.raises(ContractViolation, match="date-time"):
        validate_body(spec, {"$ref": "#/components/schemas/Run"},
                      {**bad_run, "status": "pending"}, "run")


@bounded(10)
async def test_the_document_is_well_formed(api: Harness, contract: ContractRecorder) -> None:
    spec = contract.spec
    assert spec == (await api.client.get(f"{PREFIX}/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    for schema in spec["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    assert set(_refs(spec)) <= {f"#/components/schemas/{n}" for n in spec["components"]["schemas"]}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op["operationId"] and op["responses"], (method, path)
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == set(_names(path)), (method, path)
            if op.get("security"):  # every guarded route documents its refusals
                assert {"401", "403"} <= set(op["responses"]), (method, path)
    operation_ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


# --- every route, answered as documented --------------------------------------------------


async def expect(api: Harness, method: str, url: str, status: int, **kwargs: Any) -> Any:
    response = await api.client.request(method, url, **kwargs)
    assert response.status_code == status, (method, url, response.status_code,
                                            response.text[:300])
    if response.headers.get("content-type", "").endswith("json"):
        return response.json()
    return response.text


@bounded(40)
async def test_every_route_answers_as_documented(api: Harness,
                                                 contract: ContractRecorder) -> None:
    alice, bob, olga, root = (api.as_(k) for k in ("alice", "bob", "olga", "root"))
    v1 = PREFIX
    # policy first, so a patch needs an approval bound to its job
    snap = await expect(api, "POST", f"{v1}/policy/bundles", 201, content=POLICY,
                        headers={**root, **YAML})
    await expect(api, "POST", f"{v1}/policy/bundles", 200, content=POLICY,
                 headers={**root, **YAML})
    await expect(api, "POST", f"{v1}/policy/bundles", 201,
                 content=json.dumps({"default_decision": "deny", "rules": []}),
                 headers={**root, **JSON})
    await expect(api, "POST", f"{v1}/policy/snapshots/{snap['snapshot_hash']}/activate", 200,
                 headers=root)
    listed = await expect(api, "GET", f"{v1}/policy/snapshots", 200, headers=olga)
    assert listed["active"] == snap["snapshot_hash"] and len(listed["items"]) == 2
    verdict = await expect(api, "POST", f"{v1}/policy/evaluate", 200, headers=alice,
                           json={"topic": "job.incident.patch.apply", "risk_tags": ["x"],
                                 "labels": {"team": "sre"}, "input": {"n": 1}})
    assert verdict["decision"] == "require_approval"
    # workflows, as YAML and as JSON
    await expect(api, "POST", f"{v1}/workflows", 201, content=definition("incident-remediation"),
                 headers={**alice, **YAML})
    await expect(api, "POST", f"{v1}/workflows", 200, content=definition("incident-remediation"),
                 headers={**alice, **YAML})
    as_json = json.dumps({"id": "tiny", "name": "Tiny", "version": "1.0.0",
                          "steps": {"only": {"type": "job", "topic": "job.tiny"}}})
    await expect(api, "POST", f"{v1}/workflows", 201, content=as_json, headers={**alice, **JSON})
    await expect(api, "POST", f"{v1}/workflows", 201, content=definition("forbidden-flow"),
                 headers={**alice, **YAML})
    await expect(api, "GET", f"{v1}/workflows", 200, headers=bob)
    versions = await expect(api, "GET", f"{v1}/workflows/incident-remediation", 200, headers=olga)
    assert [v["version"] for v in versions["versions"]] == ["1.0.0"]
    # runs: started, replayed, refused by policy
    start = f"{v1}/workflows/incident-remediation/runs"
    keyed = {**alice, "Idempotency-Key": "contract-1"}
    run = await expect(api, "POST", start, 201, json={"input": {"incident_id": "I-1"}},
                       headers=keyed)
    await expect(api, "POST", start, 200, json={"input": {"incident_id": "I-1"}}, headers=keyed)
    await expect(api, "POST", start, 409, json={"input": {"incident_id": "I-2"}}, headers=keyed)
    denied = await expect(api, "POST", f"{v1}/workflows/forbidden-flow/runs", 403, json={},
                          headers=alice)
    assert denied["rule"] == "never-this-one" and denied["run_id"]
    run_id = run["run_id"]
    await expect(api, "GET", f"{v1}/workflow-runs/{run_id}", 200, headers=bob)
    page = await expect(api, "GET", f"{v1}/workflow-runs", 200, params={"limit": "1"},
                        headers=olga)
    assert page["next_cursor"]
    await expect(api, "GET", f"{v1}/workflow-runs", 200, headers=olga,
                 params={"cursor": page["next_cursor"], "status": "denied"})
    # the gate's approval, then the patch's approval bound to its job
    detail = await drive_to_rest(api, run_id, olga)
    [gate] = detail["approvals"]
    queue = await expect(api, "GET", f"{v1}/approvals", 200, params={"status": "pending"},
                         headers=bob)
    assert [a["id"] for a in queue["items"]] == [gate["id"]]
    await expect(api, "GET", f"{v1}/approvals/{gate['id']}", 200, headers=olga)
    await expect(api, "POST", f"{v1}/approvals/{gate['id']}/approve", 200, headers=bob,
                 json={"reason": "fine"})
    await expect(api, "POST", f"{v1}/approvals/{gate['id']}/approve", 409, headers=bob, json={})
    detail = await drive_to_rest(api, run_id, olga)
    [patch] = [a for a in detail["approvals"] if a["status"] == "pending"]
    shown = await expect(api, "GET", f"{v1}/approvals/{patch['id']}", 200, headers=bob)
    assert shown["job"]["topic"] == "job.incident.patch.apply"
    await expect(api, "POST", f"{v1}/approvals/{patch['id']}/approve", 409, headers=bob,
                 json={"job_hash": "0" * 64})
    await expect(api, "POST", f"{v1}/approvals/{patch['id']}/approve", 200, headers=bob,
                 json={"job_hash": shown["job_hash"]})
    assert (await drive_to_rest(api, run_id, olga))["status"] == "succeeded"
    # jobs and their decisions
    jobs = await expect(api, "GET", f"{v1}/jobs", 200, params={"limit": "2"}, headers=olga)
    await expect(api, "GET", f"{v1}/jobs", 200, headers=bob,
                 params={"cursor": jobs["next_cursor"], "topic": "job.incident.detect",
                         "status": "succeeded"})
    job_id = detail["jobs"][0]["job_id"]
    await expect(api, "GET", f"{v1}/jobs/{job_id}", 200, headers=api.as_("wendy"))
    decisions = await expect(api, "GET", f"{v1}/jobs/{job_id}/decisions", 200, headers=olga)
    assert decisions["items"]
    timeline = await expect(api, "GET", f"{v1}/workflow-runs/{run_id}/timeline", 200,
                            params={"limit": "3"}, headers=alice)
    await expect(api, "GET", f"{v1}/workflow-runs/{run_id}/timeline", 200, headers=alice,
                 params={"after": str(timeline["next_after"])})
    proof = await expect(api, "GET", f"{v1}/workflow-runs/{run_id}/evidence", 200,
                         headers=api.as_("audrey"))
    assert proof["lines"][0]["type"] == "header" and proof["lines"][-1]["type"] == "seal"
    # rerun (planned, then done), cancel the rerun, reject another run's gate
    rerun = f"{v1}/workflow-runs/{run_id}/rerun"
    await expect(api, "POST", rerun, 200, json={"from_step": "notify", "dry_run": True},
                 headers=olga)
    again = await expect(api, "POST", rerun, 201, json={"from_step": "notify"}, headers=olga)
    await expect(api, "POST", f"{v1}/workflow-runs/{again['run']['run_id']}/cancel", 202,
                 json={"reason": "enough"}, headers=olga)
    await expect(api, "POST", f"{v1}/workflow-runs/{again['run']['run_id']}/cancel", 409,
                 headers=olga)
    second = await expect(api, "POST", start, 201, json={"input": {}}, headers=alice)
    rested = await drive_to_rest(api, second["run_id"], olga)
    rejected = await expect(api, "POST",
                            f"{v1}/approvals/{rested['approvals'][0]['id']}/reject", 200,
                            json={"reason": "no"}, headers=bob)
    assert rejected["status"] == "rejected"
    # probes, at the root and under the prefix
    for base in ("", v1):
        for probe in ("/healthz", "/readyz", "/metrics"):
            await expect(api, "GET", f"{base}{probe}", 200)
    # a few refusals, each a problem document
    await expect(api, "GET", f"{v1}/workflow-runs/{run_id}", 401)
    await expect(api, "GET", f"{v1}/workflow-runs", 400, params={"sort": "x"}, headers=olga)
    await expect(api, "POST", f"{v1}/workflows", 422, content="id: [", headers={**alice, **YAML})
    await expect(api, "DELETE", f"{v1}/workflows", 405, headers=alice)
    await expect(api, "GET", f"{v1}/nowhere", 404, headers=alice)
    # every route was answered with one of its documented successes
    succeeded = {(m, t) for m, t, status in contract.seen if status < 300}
    missing = [f"{ep.method} {ep.path}" for ep in ENDPOINTS
               if (ep.method, PREFIX + ep.path) not in succeeded]
    assert not missing, f"routes never answered successfully here: {missing}"
    contract.check()


# --- a bounded fuzz from the document -------------------------------------------------------

FUZZ_EXAMPLES = 100  # in all, spread over the operations; derandomized, so repeatable


def _httpx_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """schemathesis' requests-style arguments, as httpx takes them."""
    params: list[tuple[str, str]] = []
    for name, value in (kwargs.get("params") or {}).items():
        for item in value if isinstance(value, list) else [value]:
            params.append((str(name), item if isinstance(item, str) else json.dumps(item)))
    headers = {str(k): (v if isinstance(v, str) else str(v)).encode("utf-8")
               for k, v in (kwargs.get("headers") or {}).items()}
    out: dict[str, Any] = {"params": params, "headers": headers}
    if "json" in kwargs:
        out["content"] = json.dumps(kwargs["json"]).encode()
    elif isinstance(kwargs.get("data"), str | bytes):
        out["content"] = kwargs["data"]
    elif kwargs.get("data") is not None:
        out["data"] = kwargs["data"]
    return out


@bounded(60)
async def test_fuzzing_from_the_document_never_fails_the_server(
        api: Harness, contract: ContractRecorder) -> None:
    world = await build(api, tenant="default", author="alice",
                        workflow_id="incident-remediation")
    schema = schemathesis.openapi.from_dict(contract.spec)
    auth = {"X-API-Key": api.keys["root"], "X-Tenant-ID": "default"}
    operations = [r.ok() for r in schema.get_all_operations() if isinstance(r, Ok)]
    assert len(operations) == len(ENDPOINTS)
    per_operation = max(2, FUZZ_EXAMPLES // len(operations))
    server_errors: list[str] = []
    sent: list[str] = []
    statuses: list[int] = []
    deadline = time.monotonic() + 45

    async def send(kwargs: dict[str, Any]) -> httpx.Response:
        with anyio.fail_after(10):
            return await call(api, kwargs["method"], kwargs["url"], **_httpx_kwargs(kwargs))

    def fuzz(operation: Any) -> None:
        modes = [operation.as_strategy(GenerationMode.POSITIVE, headers=auth),
                 operation.as_strategy(GenerationMode.NEGATIVE, headers=auth)]
        real = {n: v for n, v in world.path_values().items() if f"{{{n}}}" in operation.path}
        if real:  # and some aimed at objects that exist, to get past the 404s
            modes.append(operation.as_strategy(GenerationMode.POSITIVE, headers=auth,
                                               path_parameters=real))

        @settings(max_examples=per_operation, derandomize=True, database=None, deadline=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                         HealthCheck.data_too_large])
        @given(case=st.one_of(modes))
        def check(case: Any) -> None:
            if time.monotonic() > deadline:
                raise AssertionError("the fuzz ran past its time budget")
            kwargs = case.as_transport_kwargs(base_url="http://test")
            response = anyio.from_thread.run(send, kwargs)
            sent.append(operation.label)
            statuses.append(response.status_code)
            if response.status_code >= 500:
                server_errors.append(f"{operation.label} -> {response.status_code} "
                                     f"{response.text[:200]}\n    {kwargs!r:.400}")

        check()

    def fuzz_all() -> None:
        for operation in operations:
            fuzz(operation)

    await anyio.to_thread.run_sync(fuzz_all)
    assert len(set(sent)) == len(operations) and len(sent) >= len(operations) * 2
    assert 401 not in statuses  # every case carried root's key
    assert sum(status < 300 for status in statuses) >= 5  # and some got past validation
    assert not server_errors, f"{len(server_errors)} fuzzed requests failed the server:\n" + \
        "\n".join(dict.fromkeys(server_errors))


@bounded(10)
async def test_a_body_too_large_is_refused_with_a_problem_document(
        api: Harness, contract: ContractRecorder) -> None:
    url = f"{PREFIX}/workflows"
    headers = {**api.as_("alice"), **YAML}
    declared = await api.client.post(url, content="#" * 70_000, headers=headers)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(70):
            yield b"#" * 1_000

    streamed = await api.client.post(url, content=chunks(), headers=headers)
    contract.violations.clear()  # what the contract checker would say, this test says
    answers = {how: (r.status_code, r.headers["content-type"])
               for how, r in (("with Content-Length", declared), ("chunked", streamed))}
    assert answers == {"with Content-Length": (413, "application/problem+json"),
                       "chunked": (413, "application/problem+json")}, answers
