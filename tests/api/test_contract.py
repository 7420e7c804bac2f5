"""The API keeps the contract it publishes at /openapi.json.

Every response of every request in this module is checked against the served document
(`tests/api/contract.py`): a walk through every route with the answers a client relies
on, then schemathesis over the live app (its coverage phase and generated positive and
negative cases), which must find no failure of any of its checks: no 5xx, no status, media
type, body or `Allow` header the document does not declare, no data the schema forbids
accepted and none it allows refused (where a schema can say what is valid).
"""

from __future__ import annotations

import itertools
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
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

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
from tests.api.test_security import body_with, fill, json_routes, key_with_role, names_field
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
    assert [v["version"] for v in versions["versions"]] == ["1.1.0"]
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
    assert [a["approval_id"] for a in queue["items"]] == [gate["approval_id"]]
    await expect(api, "GET", f"{v1}/approvals/{gate['approval_id']}", 200, headers=olga)
    await expect(api, "POST", f"{v1}/approvals/{gate['approval_id']}/approve", 200, headers=bob,
                 json={"reason": "fine"})
    await expect(api, "POST", f"{v1}/approvals/{gate['approval_id']}/approve", 409, headers=bob,
                 json={})
    detail = await drive_to_rest(api, run_id, olga)
    [patch] = [a for a in detail["approvals"] if a["status"] == "pending"]
    shown = await expect(api, "GET", f"{v1}/approvals/{patch['approval_id']}", 200, headers=bob)
    assert shown["job"]["topic"] == "job.incident.patch.apply"
    await expect(api, "POST", f"{v1}/approvals/{patch['approval_id']}/approve", 409, headers=bob,
                 json={"job_hash": "0" * 64})
    await expect(api, "POST", f"{v1}/approvals/{patch['approval_id']}/approve", 200, headers=bob,
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
    later = await expect(api, "GET", f"{v1}/workflow-runs/{run_id}/timeline", 200,
                         headers=alice, params={"cursor": timeline["next_cursor"]})
    assert later["items"][0]["seq"] == timeline["items"][-1]["seq"] + 1
    alias = await expect(api, "GET", f"{v1}/workflow-runs/{run_id}/timeline", 200,
                         headers=alice, params={"after": timeline["next_cursor"]})
    assert alias == later  # after= is the deprecated spelling of cursor=
    proof = await expect(api, "GET", f"{v1}/workflow-runs/{run_id}/evidence", 200,
                         headers=api.as_("audrey"))
    assert proof["lines"][0]["type"] == "header" and proof["lines"][-1]["type"] == "seal"
    # rerun (planned, then done), cancel the rerun, reject another run's gate
    rerun = f"{v1}/workflow-runs/{run_id}/rerun"
    await expect(api, "POST", rerun, 200, json={"from_step": "notify", "dry_run": True},
                 headers=olga)
    again = await expect(api, "POST", rerun, 201, json={"from_step": "notify"}, headers=olga)
    await expect(api, "POST", f"{v1}/workflow-runs/{again['run_id']}/cancel", 202,
                 json={"reason": "enough"}, headers=olga)
    await expect(api, "POST", f"{v1}/workflow-runs/{again['run_id']}/cancel", 409,
                 headers=olga)
    second = await expect(api, "POST", start, 201, json={"input": {}}, headers=alice)
    rested = await drive_to_rest(api, second["run_id"], olga)
    rejected = await expect(api, "POST",
                            f"{v1}/approvals/{rested['approvals'][0]['approval_id']}/reject", 200,
                            json={"reason": "no"}, headers=bob)
    assert rejected["status"] == "rejected"
    me = await expect(api, "GET", f"{v1}/whoami", 200, headers=olga)
    assert (me["principal"], me["roles"], me["tenant"]) == ("olga", ["operator"], "default")
    # the fleet: workers (none registered here) and the queues of the jobs above
    await expect(api, "GET", f"{v1}/workers", 200, headers=olga, params={"all": "true"})
    await expect(api, "GET", f"{v1}/queues", 200, headers=olga)
    # an event for wait_event steps, and the same one again
    event = {"id": "e-1", "name": "ticket.approved", "key": "k", "data": {"by": "carol"}}
    await expect(api, "POST", f"{v1}/events", 201, json=event, headers=olga)
    await expect(api, "POST", f"{v1}/events", 200, json=event, headers=olga)
    await expect(api, "POST", f"{v1}/events", 409, json={**event, "data": 1}, headers=olga)
    # cron schedules (docs/workflows.md#schedules)
    cronned = ("id: cronned\nname: Cronned\nversion: 1.0.0\nschedules:\n"
               "  - {name: nightly, cron: '0 3 * * *', timezone: Europe/Paris}\n"
               "steps:\n  only: {type: job, topic: job.cronned}\n")
    await expect(api, "POST", f"{v1}/workflows", 201, content=cronned,
                 headers={**alice, **YAML})
    await expect(api, "GET", f"{v1}/schedules", 200, headers=alice)
    await expect(api, "POST", f"{v1}/schedules/cronned/nightly/pause", 200, headers=olga)
    await expect(api, "POST", f"{v1}/schedules/cronned/nightly/resume", 200, headers=olga)
    await expect(api, "POST", f"{v1}/schedules/cronned/none/pause", 404, headers=olga)
    # probes, at the root and under the prefix
    for base in ("", v1):
        for probe in ("/healthz", "/readyz", "/metrics"):
            await expect(api, "GET", f"{base}{probe}", 200)
    # a batch start: a result per item (one started, one refused), one problem when the
    # request as a whole is malformed
    started = await expect(api, "POST", f"{v1}/workflows/tiny/runs/batch", 207, headers=alice,
                           json={"items": [{"input": {"n": 1}, "idempotency_key": "b-1"},
                                           {"input": [1]}]})
    assert [i["status"] for i in started["items"]] == [201, 422]
    await expect(api, "POST", f"{v1}/workflows/tiny/runs/batch", 422, headers=alice,
                 json={"items": []})
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

FUZZ_EXAMPLES = 400  # in all, spread over the operations; derandomized, so repeatable


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


# Every check schemathesis runs on a response, but ignored_auth: it re-sends requests
# through schemathesis' own transport, outside this event loop and its database pool
# (tests/api/test_security.py covers every key path).
EXCLUDED_CHECKS = [ignored_auth]
# positive_data_acceptance ("schema-valid data is accepted") holds wherever the schema can
# say what is valid; it cannot for these bodies, whose rules (a definition's DAG and step
# fields, a rule's match, the steps a run has) are docs/'s and answered 422 with the field,
# nor for a cursor, which is valid only if the server issued it.
SEMANTIC_BODIES = frozenset({"POST /api/v1/workflows", "POST /api/v1/policy/bundles",
                             "POST /api/v1/workflow-runs/{run_id}/rerun"})


def excluded_checks(operation: Any, case: Any) -> list[Any]:
    if operation.label in SEMANTIC_BODIES or (case.query or {}).get("cursor"):
        return [*EXCLUDED_CHECKS, positive_data_acceptance]
    return EXCLUDED_CHECKS
COVERAGE_CASES = 100  # per operation, at most: its boundary values, deterministic


@bounded(200)
async def test_schemathesis_finds_no_failure_in_the_live_app(
        api: Harness, contract: ContractRecorder) -> None:
    """Schemathesis' checks over every operation: its coverage phase (boundary values,
    missing and empty fields, unexpected methods) and generated positive and negative
    cases, each answered by the live app; no 5xx and no other check failing."""
    world = await build(api, tenant="default", author="alice",
                        workflow_id="incident-remediation")
    schema = schemathesis.openapi.from_dict(contract.spec)
    auth = {"X-API-Key": api.keys["root"], "X-Tenant-ID": "default"}
    operations = [r.ok() for r in schema.get_all_operations() if isinstance(r, Ok)]
    assert len(operations) == len(ENDPOINTS)
    per_operation = max(2, FUZZ_EXAMPLES // len(operations))
    failures: list[str] = []
    sent: list[str] = []
    statuses: list[int] = []
    # a guard against a generator that never ends, not a timing: ~10 s on a quiet machine,
    # far longer on a loaded one
    deadline = time.monotonic() + 180

    async def send(kwargs: dict[str, Any]) -> httpx.Response:
        with anyio.fail_after(10):
            return await call(api, kwargs["method"], kwargs["url"], **_httpx_kwargs(kwargs))

    def check_case(operation: Any, case: Any) -> None:
        if time.monotonic() > deadline:
            raise AssertionError("schemathesis ran past its time budget")
        kwargs = case.as_transport_kwargs(base_url="http://test")
        response = anyio.from_thread.run(send, kwargs)
        sent.append(operation.label)
        statuses.append(response.status_code)
        try:
            case.validate_response(response, excluded_checks=excluded_checks(operation, case),
                                   headers=kwargs.get("headers"))
        except (FailureGroup, Failure) as exc:
            failures.append(f"{operation.label} -> {response.status_code}: "
                            f"{str(exc)[:400]}\n    {kwargs!r:.400}")

    def coverage(operation: Any) -> None:
        cases = schema.iter_coverage_cases(
            operation, generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
            generation_config=schema.config.generation_for(operation=operation))
        for case in itertools.islice(cases, COVERAGE_CASES):
            # a key coverage sends is root's (it would send it empty: 401s prove nothing);
            # a case without one tests that the key is required, and stays without
            headers = dict(case.headers or {})
            if "X-API-Key" in headers:
                headers["X-API-Key"] = auth["X-API-Key"]
            headers["X-Tenant-ID"] = headers.get("X-Tenant-ID") or auth["X-Tenant-ID"]
            case.headers = headers
            check_case(operation, case)

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
            check_case(operation, case)

        check()

    def run_all() -> None:
        for operation in operations:
            coverage(operation)
            fuzz(operation)

    await anyio.to_thread.run_sync(run_all)
    assert len(set(sent)) == len(operations) and len(sent) >= len(operations) * 2
    assert sum(status < 300 for status in statuses) >= 5  # some got past validation
    assert not failures, f"{len(failures)} schemathesis failures:\n" + \
        "\n".join(dict.fromkeys(failures))


# --- where schemathesis once found the document and the server disagreeing ---------------


@bounded(30)
async def test_an_empty_query_parameter_is_an_absent_one(api: Harness) -> None:
    """The document marks every query parameter allowEmptyValue: `?limit=` is no limit."""
    world = await build(api, tenant="default", author="alice",
                        workflow_id="incident-remediation")
    root = api.as_("root")
    for ep in (ep for ep in ENDPOINTS if ep.query):
        url = fill(ep, world.path_values())
        absent = await expect(api, "GET", url, 200, headers=root)
        for name in ep.query:
            empty = await expect(api, "GET", f"{url}?{name}=", 200, headers=root)
            assert empty == absent, (ep.path, name)


@bounded(20)
async def test_the_fields_a_definition_requires_are_the_ones_the_document_requires(
        api: Harness, contract: ContractRecorder) -> None:
    minimal = {"WorkflowDefinition": {"id": "least", "name": "Least", "version": "1.0.0",
                                      "steps": {"only": {"type": "job", "topic": "job.x"}}},
               "PolicyBundle": {"default_decision": "allow"}}
    for url, name in ((f"{PREFIX}/workflows", "WorkflowDefinition"),
                      (f"{PREFIX}/policy/bundles", "PolicyBundle")):
        required = contract.spec["components"]["schemas"][name]["required"]
        assert sorted(minimal[name]) == sorted(required), name
        refused = await expect(api, "POST", url, 422, json={}, headers=api.as_("root"))
        assert sorted(e["field"] for e in refused["errors"]) == sorted(required), refused
        await expect(api, "POST", url, 201, json=minimal[name], headers=api.as_("root"))


@bounded(30)
async def test_null_is_accepted_exactly_where_the_document_allows_it(
        api: Harness, contract: ContractRecorder) -> None:
    world = await build(api, tenant="default", author="alice",
                        workflow_id="incident-remediation")
    checked = []
    for ep, schema in json_routes(contract.spec):
        assert ep.request is not None
        for field, prop in schema["properties"].items():
            kinds = prop.get("type")
            if kinds is None or field in schema.get("required", []):
                continue
            body = body_with(ep.request, field, None)
            response = await call(api, ep.method, fill(ep, world.path_values()), json=body,
                                  headers=api.as_(key_with_role(ep)))
            refused = response.status_code in (400, 422) and names_field(response, field)
            nullable = isinstance(kinds, list) and "null" in kinds
            assert refused != nullable, (ep.path, field, response.status_code, response.text)
            checked.append((ep.path, field))
    assert ("/policy/evaluate", "capability") in checked


@bounded(20)
async def test_every_path_answers_an_unknown_method_with_all_of_its_methods(
        api: Harness, contract: ContractRecorder) -> None:
    """One route per path: OPTIONS (or any method the path lacks) is a 405 whose Allow
    lists every documented method of the path."""
    world = await build(api, tenant="default", author="alice",
                        workflow_id="incident-remediation")
    by_path: dict[str, set[str]] = {}
    for ep in ENDPOINTS:
        by_path.setdefault(fill(ep, world.path_values()), set()).add(ep.method)
    assert {"GET", "POST"} <= by_path[f"{PREFIX}/workflows"]
    for url, methods in by_path.items():
        for method in ("OPTIONS", "PUT", "DELETE", "PATCH"):
            if method in methods:
                continue
            response = await api.client.request(method, url, headers=api.as_("root"))
            assert response.status_code == 405, (method, url, response.status_code)
            allowed = {m.strip() for m in response.headers["allow"].split(",")}
            assert allowed - {"HEAD"} == methods, (method, url, allowed)
            assert response.headers["content-type"] == "application/problem+json"


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
