"""Values no JSON column can hold are refused as bad input, by their path, and change nothing.

Each case below once answered 500 (or, for /policy/evaluate, 200 where starting a run
refused the same input): an integer of more digits than Python converts (4,300), NaN,
±Infinity and ``1e400`` in a run input, a lone UTF-16 surrogate (``"\\ud800"``) in an input,
a definition's name or a reason, and YAML's ``.nan``/``.inf``. Every one must answer a 4xx
problem document whose ``errors`` name the field, with every warden table unchanged.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from api.app import PREFIX
from tests.api.conftest import Harness
from tests.api.contract import ContractRecorder
from tests.api.test_security import fingerprint
from tests.api.worlds import World, bounded, build

pytestmark = pytest.mark.anyio

BIG = "1" * 4301  # one digit past sys.get_int_max_str_digits()
JSON = "application/json"
YAML = "application/yaml"
WORKFLOW = {"id": "hostile", "name": "Hostile", "version": "1.0.0",
            "steps": {"only": {"type": "job", "topic": "job.hostile"}}}
BUNDLE = {"default_decision": "allow", "rules": [
    {"name": "r", "decision": "deny", "reason": "no", "match": {"topics": ["job.x"]}}]}
WORKFLOW_YAML = ("id: hostile\nname: {name}\nversion: 1.0.0\nsteps:\n  only:\n"
                 "    type: job\n    topic: job.hostile\n    input: {{x: {x}}}\n")
BUNDLE_YAML = "default_decision: allow\nname: {name}\n"


def raw(template: dict[str, Any], **replace: str) -> str:
    """``template`` as JSON with the string values ``@name`` replaced by raw JSON text, so
    a body can carry what json.dumps would never write (NaN, 4,301 digits, "\\ud800")."""
    text = json.dumps(template)
    for name, value in replace.items():
        text = text.replace(f'"@{name}"', value)
    return text


def workflow_json(**fields: Any) -> dict[str, Any]:
    return {**WORKFLOW, **fields}


START = "POST /workflows/{workflow_id}/runs"
EVALUATE = "POST /policy/evaluate"
CANCEL = "POST /workflow-runs/{run_id}/cancel"
RERUN = "POST /workflow-runs/{run_id}/rerun"
APPROVE = "POST /approvals/{approval_id}/approve"
REJECT = "POST /approvals/{approval_id}/reject"
WORKFLOWS = "POST /workflows"
BUNDLES = "POST /policy/bundles"
SURROGATE = '"\\ud800"'

# id -> (route, media type, body, the field the problem must name)
CASES: dict[str, tuple[str, str, str, str]] = {
    # an integer of 4,301 digits, in every JSON body the API reads
    "huge integer in a run input": (START, JSON, raw({"input": {"n": "@v"}}, v=BIG), "input.n"),
    "huge integer in evaluated input": (
        EVALUATE, JSON, raw({"topic": "job.x", "input": {"n": "@v"}}, v=BIG), "input.n"),
    "huge integer as dry_run": (RERUN, JSON, raw({"from_step": "notify", "dry_run": "@v"},
                                                 v=BIG), "dry_run"),
    "huge integer as a cancel reason": (CANCEL, JSON, raw({"reason": "@v"}, v=BIG), "reason"),
    "huge integer as a job hash": (APPROVE, JSON, raw({"job_hash": "@v"}, v=BIG), "job_hash"),
    "huge integer as a reject reason": (REJECT, JSON, raw({"reason": "@v"}, v=BIG), "reason"),
    "huge integer in a JSON workflow": (
        WORKFLOWS, JSON, raw(workflow_json(timeout_ms="@v"), v=BIG), "timeout_ms"),
    "huge integer in a JSON bundle": (BUNDLES, JSON, raw({**BUNDLE, "name": "@v"}, v=BIG),
                                      "name"),
    # numbers JSON has not, in a run input and in what /policy/evaluate is asked
    **{f"{word} in a run input": (START, JSON, raw({"input": {"x": {"y": ["@v"]}}}, v=word),
                                  "input.x.y[0]")
       for word in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400")},
    **{f"{word} in evaluated input": (EVALUATE, JSON,
                                      raw({"topic": "job.x", "input": {"x": "@v"}}, v=word),
                                      "input.x")
       for word in ("NaN", "Infinity", "1e400")},
    # a lone surrogate: valid JSON escape, no Unicode character, no UTF-8
    "surrogate in a run input": (START, JSON, raw({"input": {"x": "@v"}}, v=SURROGATE),
                                 "input.x"),
    "surrogate as an input key": (START, JSON, '{"input": {"\\udfff": 1}}', "input.\\udfff"),
    "surrogate in evaluated input": (
        EVALUATE, JSON, raw({"topic": "job.x", "input": {"x": "@v"}}, v=SURROGATE), "input.x"),
    "surrogate as a cancel reason": (CANCEL, JSON, raw({"reason": "@v"}, v=SURROGATE),
                                     "reason"),
    "surrogate as an approve reason": (APPROVE, JSON, raw({"reason": "@v"}, v=SURROGATE),
                                       "reason"),
    "surrogate as a reject reason": (REJECT, JSON, raw({"reason": "@v"}, v=SURROGATE),
                                     "reason"),
    "surrogate as a JSON workflow name": (
        WORKFLOWS, JSON, raw(workflow_json(name="@v"), v=SURROGATE), "name"),
    "surrogate as a YAML workflow name": (
        WORKFLOWS, YAML, WORKFLOW_YAML.format(name=SURROGATE, x=1), "name"),
    "surrogate as a JSON policy name": (BUNDLES, JSON, raw({**BUNDLE, "name": "@v"},
                                                           v=SURROGATE), "name"),
    "surrogate as a JSON rule name": (
        BUNDLES, JSON, raw({**BUNDLE, "rules": [{**BUNDLE["rules"][0], "name": "@v"}]},
                           v=SURROGATE), "rules[0].name"),
    "surrogate as a YAML policy name": (BUNDLES, YAML, BUNDLE_YAML.format(name=SURROGATE),
                                        "name"),
    # YAML's own non-finite floats and an overflowing one
    **{f"YAML {word} in a workflow": (WORKFLOWS, YAML, WORKFLOW_YAML.format(name="H", x=word),
                                      "steps.only.input.x")
       for word in (".nan", ".inf", "-.inf", "1e400")},
    **{f"YAML {word} as a policy name": (BUNDLES, YAML, BUNDLE_YAML.format(name=word), "name")
       for word in (".nan", ".inf")},
}
KEYS = {START: "alice", EVALUATE: "alice", CANCEL: "olga", RERUN: "olga", APPROVE: "bob",
        REJECT: "bob", WORKFLOWS: "alice", BUNDLES: "root"}


@pytest.fixture(autouse=True)
async def contract(api: Harness) -> AsyncIterator[ContractRecorder]:
    """Every refusal here must also be one the served OpenAPI document allows."""
    recorder = ContractRecorder((await api.client.get("/openapi.json")).json())
    recorder.install(api.client)
    yield recorder
    recorder.check()


def url(route: str, world: World) -> str:
    path = route.split(" ", 1)[1]
    for name, value in world.path_values().items():
        path = path.replace(f"{{{name}}}", value)
    return PREFIX + path


@pytest.mark.parametrize("case", list(CASES))
@bounded(30)
async def test_a_value_no_column_can_hold_is_refused_naming_its_field(
        api: Harness, contract: ContractRecorder, case: str) -> None:
    route, media, body, field = CASES[case]
    world = await build(api, tenant="default", author="alice",
                        workflow_id="incident-remediation")
    before = await fingerprint(api)
    response = await api.client.post(url(route, world), content=body.encode("ascii"),
                                     headers={**api.as_(KEYS[route]), "Content-Type": media})
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert [e["field"] for e in problem["errors"]] == [field], problem
    assert field in problem["detail"] and field not in problem["errors"][0]["message"], problem
    assert await fingerprint(api) == before  # nothing stored, decided or cancelled


@bounded(30)
async def test_evaluate_and_run_start_refuse_the_same_inputs_alike(api: Harness) -> None:
    """/policy/evaluate validates its input with the run-start route's own function."""
    world = await build(api, tenant="default", author="alice",
                        workflow_id="incident-remediation")
    before = await fingerprint(api)
    start = url(START, world)
    evaluate = url(EVALUATE, world)
    for bad in ("[1]", '"text"', "7", raw({"x": "@v"}, v="NaN"), raw({"x": "@v"}, v=SURROGATE)):
        answers = []
        for target, body in ((start, f'{{"input": {bad}}}'),
                             (evaluate, f'{{"topic": "job.x", "input": {bad}}}')):
            response = await api.client.post(target, content=body,
                                              headers={**api.as_("alice"), "Content-Type": JSON})
            answers.append((response.status_code, response.json()["errors"]))
        assert answers[0] == answers[1], (bad, answers)
        assert 400 <= answers[0][0] < 500, (bad, answers)
    assert await fingerprint(api) == before
