from __future__ import annotations

import copy
import json
import random
import time
from typing import Any

import pytest

from engine.core.enums import StepType
from engine.core.errors import InvalidDefinition, InvalidInput, NotFound, Problem
from engine.definitions.model import (
    MAX_DEFINITION_BYTES,
    MAX_DEPTH,
    MAX_STEPS,
    RetryPolicy,
    StepMeta,
    WorkflowDef,
    parse_workflow,
    parse_workflow_doc,
    version_key,
)

INCIDENT_YAML = """\
id: incident-remediation          # stable id within the tenant
name: Incident remediation workflow
version: 1.0.0                    # a (tenant, id, version) is immutable once stored
steps:
  detect:   {type: job, topic: job.incident.detect}
  classify: {type: job, topic: job.incident.classify, depends_on: [detect]}
  patch_plan: {type: job, topic: job.incident.patch.plan, depends_on: [classify]}
  approval_gate: {type: approval, depends_on: [patch_plan]}
  apply_patch:
    type: job
    topic: job.incident.patch.apply
    depends_on: [approval_gate]
    retries: {max_attempts: 2, backoff_ms: 5000}
  notify: {type: notify, depends_on: [apply_patch]}
"""

INCIDENT_DOC: dict[str, Any] = {
    "id": "incident-remediation",
    "name": "Incident remediation workflow",
    "version": "1.0.0",
    "steps": {
        "detect": {"type": "job", "topic": "job.incident.detect"},
        "classify": {"type": "job", "topic": "job.incident.classify", "depends_on": ["detect"]},
        "patch_plan": {"type": "job", "topic": "job.incident.patch.plan",
                       "depends_on": ["classify"]},
        "approval_gate": {"type": "approval", "depends_on": ["patch_plan"]},
        "apply_patch": {"type": "job", "topic": "job.incident.patch.apply",
                        "depends_on": ["approval_gate"],
                        "retries": {"max_attempts": 2, "backoff_ms": 5000}},
        "notify": {"type": "notify", "depends_on": ["apply_patch"]},
    },
}

# Every field of every step type, with references, to exercise the round trip.
RICH_DOC: dict[str, Any] = {
    "id": "rich.flow_1",
    "name": "Rich",
    "version": "2.1.0-rc.1",
    "timeout_ms": 3_600_000,
    "steps": {
        "fetch": {"type": "job", "topic": "job:fetch", "priority": 1, "timeout_ms": 30_000,
                  "input": {"url": "${input.source.url}", "tries": [1, 2, {"x": None}]},
                  "retries": {"max_attempts": 5, "backoff_ms": 100, "max_backoff_ms": 1000,
                              "multiplier": 3, "jitter": 0},
                  "meta": {"risk_tags": ["network"], "capability": "http.get",
                           "labels": {"team": "sre"}}},
        "gate": {"type": "approval", "depends_on": ["fetch"], "expires_in_ms": 86_400_000},
        "apply": {"type": "job", "topic": "job.apply", "depends_on": ["gate"],
                  "input": {"body": "${steps.fetch.output}",
                            "note": "from ${steps.fetch.output.items.0} by $${user}"}},
        "tell": {"type": "notify", "depends_on": ["apply"], "message": "done",
                 "webhook": "https://hooks.example.com/warden?x=1"},
    },
}


def _doc(**changes: Any) -> dict[str, Any]:
    """The incident document with top-level fields or ``steps.<id>`` bodies replaced."""
    doc = copy.deepcopy(INCIDENT_DOC)
    for key, value in changes.items():
        if key.startswith("steps__"):
            doc["steps"][key.removeprefix("steps__")] = value
        else:
            doc[key] = value
    return doc


def _problems(source: Any, **kwargs: Any) -> list[Problem]:
    with pytest.raises(InvalidDefinition) as caught:
        if isinstance(source, str | bytes):
            parse_workflow(source, **kwargs)
        else:
            parse_workflow_doc(source)
    return list(caught.value.problems)


def _one_problem(source: Any, **kwargs: Any) -> Problem:
    problems = _problems(source, **kwargs)
    assert len(problems) == 1, problems
    return problems[0]


# --- the incident-remediation example ---------------------------------------------

@pytest.mark.parametrize(("source", "media_type"), [
    (INCIDENT_YAML, None),
    (INCIDENT_YAML, "application/yaml"),
    (INCIDENT_YAML.encode(), "text/yaml"),
    (json.dumps(INCIDENT_DOC), None),
    (json.dumps(INCIDENT_DOC, indent=2).encode(), "application/json; charset=utf-8"),
])
def test_the_design_example_parses(source: str | bytes, media_type: str | None) -> None:
    workflow = parse_workflow(source, media_type=media_type)
    assert (workflow.id, workflow.name, workflow.version, workflow.timeout_ms) == (
        "incident-remediation", "Incident remediation workflow", "1.0.0", None)
    assert list(workflow.steps) == ["detect", "classify", "patch_plan", "approval_gate",
                                    "apply_patch", "notify"]
    detect = workflow.steps["detect"]
    assert (detect.type, detect.topic, detect.depends_on, detect.input) == (
        StepType.JOB, "job.incident.detect", (), None)
    assert (detect.priority, detect.timeout_ms, detect.retries, detect.meta) == (
        5, None, RetryPolicy(), StepMeta())
    assert workflow.steps["apply_patch"].retries == RetryPolicy(
        max_attempts=2, backoff_ms=5000, max_backoff_ms=300_000, multiplier=2.0, jitter=0.1)
    gate = workflow.steps["approval_gate"]
    assert (gate.type, gate.topic, gate.depends_on, gate.expires_in_ms) == (
        StepType.APPROVAL, None, ("patch_plan",), None)
    notify = workflow.steps["notify"]
    assert (notify.type, notify.message, notify.webhook) == (StepType.NOTIFY, None, None)
    assert workflow == parse_workflow_doc(INCIDENT_DOC)


def test_topological_order_breaks_ties_by_definition_order() -> None:
    workflow = parse_workflow_doc(_doc(steps={
        "late": {"type": "notify", "depends_on": ["early", "z"]},
        "z": {"type": "notify"},
        "a": {"type": "notify", "depends_on": ["z"]},
        "early": {"type": "notify"},
        "m": {"type": "notify"},
    }))
    assert list(workflow.steps) == ["z", "a", "early", "late", "m"]


# --- the canonical document --------------------------------------------------------

@pytest.mark.parametrize("doc", [INCIDENT_DOC, RICH_DOC], ids=["incident", "rich"])
def test_to_doc_and_from_doc_round_trip(doc: dict[str, Any]) -> None:
    workflow = parse_workflow_doc(doc)
    canonical = workflow.to_doc()
    stored = json.loads(json.dumps(canonical))
    assert WorkflowDef.from_doc(stored) == workflow
    assert WorkflowDef.from_doc(stored).to_doc() == canonical
    assert list(WorkflowDef.from_doc(stored).steps) == list(workflow.steps)
    # A store that reorders keys (jsonb) still gives an equal definition.
    reordered = {**stored, "steps": dict(reversed(list(stored["steps"].items())))}
    assert WorkflowDef.from_doc(reordered) == workflow


def test_to_doc_fills_every_default() -> None:
    steps = parse_workflow(INCIDENT_YAML).to_doc()["steps"]
    assert steps["apply_patch"] == {
        "type": "job", "depends_on": ["approval_gate"], "topic": "job.incident.patch.apply",
        "input": None, "timeout_ms": None,
        "retries": {"max_attempts": 2, "backoff_ms": 5000, "max_backoff_ms": 300_000,
                    "multiplier": 2.0, "jitter": 0.1},
        "priority": 5, "meta": {"risk_tags": [], "capability": None, "labels": {}},
    }
    assert steps["approval_gate"]["expires_in_ms"] is None
    assert "topic" not in steps["approval_gate"]
    assert (steps["notify"]["message"], steps["notify"]["webhook"]) == (None, None)


def test_the_parsed_definition_does_not_share_the_callers_input() -> None:
    doc = copy.deepcopy(RICH_DOC)
    workflow = parse_workflow_doc(doc)
    doc["steps"]["fetch"]["input"]["tries"].append(3)
    assert workflow.steps["fetch"].input == {"url": "${input.source.url}",
                                             "tries": [1, 2, {"x": None}]}
    with pytest.raises(TypeError):
        workflow.steps["fetch"].input["url"] = "x"  # type: ignore[index]


def test_raising_only_backoff_lifts_the_default_cap() -> None:
    doc = _doc(steps__detect={"type": "job", "topic": "t", "retries": {"backoff_ms": 600_000}})
    retries = parse_workflow_doc(doc).steps["detect"].retries
    assert (retries.backoff_ms, retries.max_backoff_ms) == (600_000, 600_000)


def test_an_explicit_null_is_the_same_as_an_absent_field() -> None:
    doc = _doc(timeout_ms=None, steps__detect={"type": "job", "topic": "t", "input": None,
                                               "expires_in_ms": None, "priority": None})
    assert parse_workflow_doc(doc) == parse_workflow_doc(
        _doc(steps__detect={"type": "job", "topic": "t"}))


# --- one precise problem per mistake -----------------------------------------------

BAD_DOCS: list[tuple[str, Any, str, str]] = [
    ("no-id", {k: v for k, v in INCIDENT_DOC.items() if k != "id"},
     "id", "missing required field 'id'"),
    ("empty-name", _doc(name=""), "name", "must not be empty"),
    ("no-version", {k: v for k, v in INCIDENT_DOC.items() if k != "version"},
     "version", "missing required field 'version'"),
    ("short-version", _doc(version="1.0"), "version", "'1.0' is not a semantic version"),
    ("zero-padded", _doc(version="01.0.0"), "version", "is not a semantic version"),
    ("build-metadata", _doc(version="1.0.0+build.5"), "version", "is not a semantic version"),
    ("numeric-version", _doc(version=1.5), "version", "must be a string, got 1.5 (a number)"),
    ("bad-workflow-id", _doc(id="-x"), "id", "'-x' is not a valid id"),
    ("long-id", _doc(id="a" * 65), "id", "is not a valid id"),
    ("unknown-top", _doc(description="x"), "description",
     "unknown field 'description' in a workflow (allowed: id, name, version, timeout_ms, "
     "steps, output, schedules, on_event)"),
    ("no-steps", {k: v for k, v in INCIDENT_DOC.items() if k != "steps"},
     "steps", "missing required field 'steps'"),
    ("empty-steps", _doc(steps={}), "steps", "a workflow needs at least one step"),
    ("steps-list", _doc(steps=[{"type": "job"}]), "steps", "must be a mapping, got a list"),
    ("run-timeout", _doc(timeout_ms=0), "timeout_ms", "must be between 1 and"),
    ("bad-step-id", _doc(**{"steps__bad id": {"type": "notify"}}),
     "steps.bad id", "'bad id' is not a valid id"),
    ("step-not-mapping", _doc(steps__x="job"), "steps.x",
     "a step must be a mapping, got 'job' (a string)"),
    ("unknown-step-field", _doc(steps__x={"type": "notify", "retry": 3}), "steps.x.retry",
     "unknown field 'retry' in a step (allowed: type, topic, depends_on, input, retries, "
     "timeout_ms, priority, meta, expires_in_ms, message, webhook, when, trigger, "
     "duration_ms, until, event, key, for_each, max_parallel, workflow, version, "
     "concurrency, rate_limit)"),
    ("unknown-type", _doc(steps__x={"type": "script"}), "steps.x.type",
     "unknown step type 'script' (allowed: job, approval, notify, sleep, wait_event, "
     "workflow)"),
    ("missing-type", _doc(steps__x={"topic": "t"}), "steps.x.type",
     "missing required field 'type' (one of: job, approval, notify, sleep, wait_event, "
     "workflow)"),
    ("job-without-topic", _doc(steps__x={"type": "job"}), "steps.x.topic",
     "missing required field 'topic'"),
    ("bad-topic", _doc(steps__x={"type": "job", "topic": "job incident"}), "steps.x.topic",
     "'job incident' is not a valid topic"),
    ("topic-on-approval", _doc(steps__x={"type": "approval", "topic": "t"}), "steps.x.topic",
     "'topic' is only allowed on job steps; this is a step of type 'approval'"),
    ("expiry-on-job", _doc(steps__x={"type": "job", "topic": "t", "expires_in_ms": 5}),
     "steps.x.expires_in_ms",
     "'expires_in_ms' is only allowed on approval steps; this is a step of type 'job'"),
    ("webhook-on-job", _doc(steps__x={"type": "job", "topic": "t", "webhook": "https://a"}),
     "steps.x.webhook", "'webhook' is only allowed on notify steps"),
    ("input-on-notify", _doc(steps__x={"type": "notify", "input": {}}), "steps.x.input",
     "'input' is only allowed on job steps"),
    ("dangling", _doc(steps__x={"type": "notify", "depends_on": ["detect", "nope"]}),
     "steps.x.depends_on[1]", "depends on unknown step 'nope'"),
    ("self-dependency", _doc(steps__x={"type": "notify", "depends_on": ["x"]}),
     "steps.x.depends_on[0]", "step 'x' depends on itself"),
    ("duplicate-dependency",
     _doc(steps__x={"type": "notify", "depends_on": ["detect", "classify", "detect"]}),
     "steps.x.depends_on[2]", "duplicate dependency 'detect'"),
    ("depends-on-string", _doc(steps__x={"type": "notify", "depends_on": "detect"}),
     "steps.x.depends_on", "must be a list of step ids, got 'detect' (a string)"),
    ("priority-bool", _doc(steps__x={"type": "notify", "priority": True}), "steps.x.priority",
     "must be an integer, got true (a boolean)"),
    ("priority-float", _doc(steps__x={"type": "notify", "priority": 5.0}), "steps.x.priority",
     "must be an integer, got 5.0 (a number)"),
    ("priority-string", _doc(steps__x={"type": "notify", "priority": "5"}), "steps.x.priority",
     "must be an integer, got '5' (a string)"),
    ("priority-range", _doc(steps__x={"type": "notify", "priority": 10}), "steps.x.priority",
     "must be between 0 and 9, got 10"),
    ("step-timeout", _doc(steps__x={"type": "job", "topic": "t", "timeout_ms": 0}),
     "steps.x.timeout_ms", "must be between 1 and"),
    ("negative-expiry", _doc(steps__x={"type": "approval", "expires_in_ms": -1}),
     "steps.x.expires_in_ms", "must be between 1 and"),
    ("zero-attempts", _doc(steps__x={"type": "notify", "retries": {"max_attempts": 0}}),
     "steps.x.retries.max_attempts", "must be between 1 and 100, got 0"),
    ("many-attempts", _doc(steps__x={"type": "notify", "retries": {"max_attempts": 101}}),
     "steps.x.retries.max_attempts", "must be between 1 and 100, got 101"),
    ("unknown-retry-field", _doc(steps__x={"type": "notify", "retries": {"delay": 1}}),
     "steps.x.retries.delay",
     "unknown field 'delay' in retries (allowed: max_attempts, backoff_ms, max_backoff_ms, "
     "multiplier, jitter)"),
    ("shrinking-backoff", _doc(steps__x={"type": "notify", "retries": {"multiplier": 0.5}}),
     "steps.x.retries.multiplier", "must be between 1.0 and 100.0, got 0.5"),
    ("jitter-range", _doc(steps__x={"type": "notify", "retries": {"jitter": 1.5}}),
     "steps.x.retries.jitter", "must be between 0.0 and 1.0, got 1.5"),
    ("cap-below-backoff",
     _doc(steps__x={"type": "notify", "retries": {"backoff_ms": 500, "max_backoff_ms": 100}}),
     "steps.x.retries.max_backoff_ms", "must be >= backoff_ms (500), got 100"),
    ("retries-not-mapping", _doc(steps__x={"type": "notify", "retries": 3}),
     "steps.x.retries", "must be a mapping, got 3 (a number)"),
    ("risk-tags-string", _doc(steps__x={"type": "notify", "meta": {"risk_tags": "prod"}}),
     "steps.x.meta.risk_tags", "must be a list of strings, got 'prod' (a string)"),
    ("risk-tag-number", _doc(steps__x={"type": "notify", "meta": {"risk_tags": ["a", 7]}}),
     "steps.x.meta.risk_tags[1]", "must be a non-empty string, got 7 (a number)"),
    ("capability-number", _doc(steps__x={"type": "notify", "meta": {"capability": 1}}),
     "steps.x.meta.capability", "must be a string, got 1 (a number)"),
    ("label-value", _doc(steps__x={"type": "notify", "meta": {"labels": {"team": 1}}}),
     "steps.x.meta.labels.team", "must be a string of at most 1024 characters, got 1"),
    ("unknown-meta", _doc(steps__x={"type": "notify", "meta": {"owner": "me"}}),
     "steps.x.meta.owner",
     "unknown field 'owner' in meta (allowed: risk_tags, capability, labels)"),
    ("ftp-webhook", _doc(steps__x={"type": "notify", "webhook": "ftp://example.com/x"}),
     "steps.x.webhook", "must be an http(s) URL, got 'ftp://example.com/x'"),
    ("hostless-webhook", _doc(steps__x={"type": "notify", "webhook": "https://"}),
     "steps.x.webhook", "must be an http(s) URL"),
    ("spaced-webhook", _doc(steps__x={"type": "notify", "webhook": "https://a.b/ c"}),
     "steps.x.webhook", "must be an http(s) URL"),
    ("input-list", _doc(steps__x={"type": "job", "topic": "t", "input": ["a"]}),
     "steps.x.input", "must be a mapping, got a list"),
    ("non-string-key", _doc(steps__x={"type": "job", "topic": "t", "input": {1: "a"}}),
     "steps.x.input", "keys must be strings, got 1 (a number)"),
    ("infinite-number", _doc(steps__x={"type": "job", "topic": "t",
                                       "input": {"a": [float("inf")]}}),
     "steps.x.input.a[0]", "must be a finite number, got inf"),
    ("python-object", _doc(steps__x={"type": "job", "topic": "t", "input": {"a": {1, 2}}}),
     "steps.x.input.a", "a set is not a JSON value"),
    ("not-a-mapping", ["a"], "", "a workflow definition must be a mapping, got a list"),
]


@pytest.mark.parametrize(("doc", "path", "message"),
                         [case[1:] for case in BAD_DOCS], ids=[case[0] for case in BAD_DOCS])
def test_each_mistake_gives_one_precise_problem(doc: Any, path: str, message: str) -> None:
    problem = _one_problem(doc)
    assert problem.path == path
    assert message in problem.message


@pytest.mark.parametrize(("steps", "path", "message"), [
    ({"a": ["b"], "b": ["a"]}, "steps.a.depends_on", "cycle: a -> b -> a"),
    ({"c": ["b"], "b": ["a"], "a": ["c"]}, "steps.a.depends_on", "cycle: a -> c -> b -> a"),
    # The shortest cycle through the smallest step is named, not the longer one.
    ({"a": ["b", "d"], "b": ["c"], "c": ["a"], "d": ["a"]}, "steps.a.depends_on",
     "cycle: a -> d -> a"),
])
def test_a_cycle_is_named(steps: dict[str, list[str]], path: str, message: str) -> None:
    doc = _doc(steps={sid: {"type": "notify", "depends_on": deps} for sid, deps in steps.items()})
    problem = _one_problem(doc)
    assert (problem.path, problem.message) == (
        path, f"{message} (each step depends on the next)")


def test_every_cycle_is_reported() -> None:
    steps = {"root": [], "a": ["b", "root"], "b": ["a"], "x": ["z"], "y": ["x"], "z": ["y"]}
    doc = _doc(steps={sid: {"type": "notify", "depends_on": deps} for sid, deps in steps.items()})
    assert [str(p) for p in _problems(doc)] == [
        "steps.a.depends_on: cycle: a -> b -> a (each step depends on the next)",
        "steps.x.depends_on: cycle: x -> z -> y -> x (each step depends on the next)",
    ]


def _ref_doc(template: Any, *, depends_on: tuple[str, ...] = ("classify",)) -> dict[str, Any]:
    return _doc(steps__b={"type": "job", "topic": "t", "depends_on": list(depends_on),
                          "input": {"x": template}})


@pytest.mark.parametrize(("template", "path", "message"), [
    ("${steps.notify.output}", "steps.b.input.x",
     "${steps.notify.output} refers to step 'notify', which is not an ancestor of 'b'"),
    ({"deep": ["ok ${input.a}", "${steps.nope.output.x}"]}, "steps.b.input.x.deep[1]",
     "${steps.nope.output.x} refers to unknown step 'nope'"),
    ("${steps.b.output}", "steps.b.input.x", "${steps.b.output} refers to step 'b' itself"),
    ("${env.HOME}", "steps.b.input.x", "${env.HOME}: unknown root 'env'"),
    ("${input..a}", "steps.b.input.x", "${input..a}: malformed path"),
    ("tail ${input.a", "steps.b.input.x", "${input.a: unterminated '${'"),
])
def test_bad_references_are_reported(template: Any, path: str, message: str) -> None:
    problem = _one_problem(_ref_doc(template))
    assert problem.path == path
    assert message in problem.message


@pytest.mark.parametrize("template", [
    "${steps.classify.output}", "${steps.detect.output.hosts.0}", "${input}",
    "$${steps.notify.output} is escaped", {"k": ["${steps.detect.output}"]},
])
def test_references_to_ancestors_are_accepted(template: Any) -> None:
    workflow = parse_workflow_doc(_ref_doc(template))
    assert workflow.steps["b"].input == {"x": template}


def test_several_problems_are_reported_at_once() -> None:
    doc = _doc(version="one", extra=1, steps__detect={"type": "job", "priority": 99},
               steps__x={"type": "robot", "depends_on": ["ghost"]})
    assert sorted(str(p) for p in _problems(doc)) == sorted([
        "extra: unknown field 'extra' in a workflow (allowed: id, name, version, timeout_ms, "
        "steps, output, schedules, on_event)",
        "version: 'one' is not a semantic version MAJOR.MINOR.PATCH with an optional "
        "-prerelease (e.g. 1.0.0 or 2.1.0-rc.1)",
        "steps.detect.topic: missing required field 'topic' (a job step names the topic "
        "its workers claim from)",
        "steps.detect.priority: must be between 0 and 9, got 99",
        "steps.x.depends_on[0]: depends on unknown step 'ghost'",
        "steps.x.type: unknown step type 'robot' (allowed: job, approval, notify, sleep, "
        "wait_event, workflow)",
    ])


# --- limits ------------------------------------------------------------------------

def test_an_oversized_source_is_refused_before_it_is_decoded() -> None:
    source = INCIDENT_YAML + "#" * MAX_DEFINITION_BYTES
    problem = _one_problem(source)
    assert problem.message == (f"the definition is {len(source)} bytes; "
                               f"the limit is {MAX_DEFINITION_BYTES} bytes")


def test_the_size_limit_counts_bytes_not_characters() -> None:
    padding = "é" * (MAX_DEFINITION_BYTES // 2)
    assert "bytes; the limit is" in _one_problem(INCIDENT_YAML + f"# {padding}\n").message


def test_too_many_steps() -> None:
    doc = _doc(steps={f"s{i}": {"type": "notify"} for i in range(MAX_STEPS + 1)})
    assert _one_problem(doc) == Problem("steps", f"{MAX_STEPS + 1} steps; the limit is 200")
    parse_workflow_doc(_doc(steps={f"s{i}": {"type": "notify"} for i in range(MAX_STEPS)}))


def _nested(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"k": value}
    return value


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    # The document, steps, a step and its input are four levels already.
    assert parse_workflow_doc(_ref_doc(_nested(MAX_DEPTH - 4)))
    problem = _one_problem(_ref_doc(_nested(MAX_DEPTH - 3)))
    assert problem.path == "steps.b.input.x" + ".k" * (MAX_DEPTH - 4)
    assert problem.message == f"nested more than {MAX_DEPTH} levels deep"


def test_absurd_nesting_in_an_api_document_is_refused_without_recursing() -> None:
    problems = _problems(_ref_doc(_nested(5000)))
    assert [p.message for p in problems] == [f"nested more than {MAX_DEPTH} levels deep"]


# --- YAML and JSON decoding --------------------------------------------------------

ALIAS_BOMB = "\n".join([
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    *(f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)),
    "id: x",
])


def test_a_yaml_alias_bomb_is_refused_at_once() -> None:
    started = time.perf_counter()
    problem = _one_problem(ALIAS_BOMB)
    assert time.perf_counter() - started < 1.0
    assert problem.message == "YAML anchors and aliases are not allowed (line 1, column 4)"


@pytest.mark.parametrize(("source", "path", "message"), [
    ("id: &x a\nname: b\n", "id", "YAML anchors and aliases are not allowed (line 1, column 5)"),
    ("id: x\nsteps:\n  a: {type: notify}\n  b: *a\n", "steps.b",
     "YAML anchors and aliases are not allowed (line 4, column 6)"),
    ("id: x\nsteps:\n  a: {type: notify}\n  a: {type: job}\n", "steps.a",
     "duplicate key 'a' (line 4, column 3)"),
    ("id: x\nid: y\n", "id", "duplicate key 'id' (line 2, column 1)"),
    ("id: !!python/object:os.system x\n", "id",
     "YAML tag 'tag:yaml.org,2002:python/object:os.system' is not allowed; only the core "
     "schema (!!str, !!int, !!float, !!bool, !!null, !!seq, !!map) (line 1, column 5)"),
    ("id: !!binary aGVsbG8=\n", "id", "YAML tag 'tag:yaml.org,2002:binary' is not allowed"),
    ("id: !custom x\n", "id", "YAML tag '!custom' is not allowed"),
    ("steps: !!set {a: null}\n", "steps", "YAML tag 'tag:yaml.org,2002:set' is not allowed here"),
    ("id: !!int abc\n", "id", "'abc' is not a valid !!int"),
    ("? [a, b]\n: c\n", "", "mapping keys must be plain values, not collections"),
    ("id: x\n---\nid: y\n", "", "a definition must be a single YAML document"),
    ("id: x\nsteps: [a\n", "", "invalid YAML at line 3, column 1"),
    ("id: 'x\n", "id", "invalid YAML at line 2"),  # located by the scalar's key
    # values no jsonb can hold, by their path
    ("timeout_ms: .nan\n", "timeout_ms", "NaN is not a JSON number"),
    ("steps: {a: {input: {x: [1, .inf]}}}\n", "steps.a.input.x[1]",
     "Infinity is not a JSON number"),
    ("timeout_ms: -.Inf\n", "timeout_ms", "-Infinity is not a JSON number"),
    ("timeout_ms: 1e400\n", "timeout_ms", "Infinity is not a JSON number"),
    ('name: "\\ud800"\n', "name", "found invalid Unicode character escape code"),
    ('name: "a\\0b"\n', "name", "contains U+0000"),
    ("a: " + "[" * 150 + "]" * 150 + "\n", "a" + "[0]" * 99, "nested more than 100 levels"),
])
def test_yaml_mistakes(source: str, path: str, message: str) -> None:
    problem = _one_problem(source)
    assert problem.path == path
    assert message in problem.message


def test_yaml_reads_the_core_schema_only() -> None:
    source = INCIDENT_YAML.replace("Incident remediation workflow", "on") + (
        "  later: {type: notify, message: 2024-01-01, priority: 0x7, depends_on: [notify]}\n"
        "  maybe: {type: notify, message: yes, webhook: !!str 'https://h.example/1'}\n")
    workflow = parse_workflow(source)
    assert workflow.name == "on"
    assert workflow.steps["later"].message == "2024-01-01"
    assert workflow.steps["later"].priority == 7
    assert workflow.steps["maybe"].message == "yes"


def test_a_yaml_number_where_a_string_belongs_is_reported() -> None:
    problem = _one_problem(INCIDENT_YAML.replace("version: 1.0.0", "version: 1.0"))
    assert str(problem) == "version: must be a string, got 1.0 (a number)"


def test_yaml_keys_that_are_not_strings_are_reported() -> None:
    problem = _one_problem(INCIDENT_YAML + "  true: {type: notify}\n")
    assert str(problem) == "steps: keys must be strings, got true (a boolean)"


@pytest.mark.parametrize(("source", "path", "message"), [
    ('{"id": "a", "steps": {"x": {"type": "notify"}, "x": {}}}', "steps.x",
     "duplicate key 'x'"),
    ('{"id": "a", "id": "b"}', "id", "duplicate key 'id'"),
    ('{"id": "a",\n "name": }', "", "invalid JSON at line 2, column 10: Expecting value"),
    ('{"id": NaN}', "id", "NaN is not a JSON number"),
    ('{"steps": {"a": {"input": [-Infinity]}}}', "steps.a.input[0]",
     "-Infinity is not a JSON number"),
    ('{"timeout_ms": 1e400}', "timeout_ms", "1e400 is out of range"),
    ('{"timeout_ms": ' + "9" * 4301 + "}", "timeout_ms", "an integer of 4301 digits is too large"),
    ('{"name": "\\ud800"}', "name", "contains a lone surrogate (U+D800)"),
    ('{"steps": {"\\udc00": {}}}', "steps.\\udc00", "the key contains a lone surrogate"),
    ('{"a":' * 50 + "[" * 60 + "]" * 60 + "}" * 50, ".".join(["a"] * 50) + "[0]" * 50,
     "nested more than 100 levels deep"),
])
def test_json_mistakes(source: str, path: str, message: str) -> None:
    problem = _one_problem(source)
    assert problem.path == path
    assert message in problem.message


@pytest.mark.parametrize(("source", "media_type", "message"), [
    (INCIDENT_YAML, "text/plain", "unsupported media type 'text/plain'"),
    (INCIDENT_YAML, "application/json", "invalid JSON at line 1, column 1"),
    (b"id: \xff\xfe", None, "not valid UTF-8 (byte 4)"),
    ("", None, "a workflow definition must be a mapping, got null"),
    ("just text", None, "a workflow definition must be a mapping, got 'just text' (a string)"),
])
def test_undecodable_sources(source: str | bytes, media_type: str | None, message: str) -> None:
    assert message in _one_problem(source, media_type=media_type).message


# --- versions and the graph --------------------------------------------------------

SEMVER_ORDER = ["0.9.9", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
                "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.2.0",
                "1.10.0", "2.0.0-0", "2.0.0"]


def test_versions_sort_in_semver_precedence() -> None:
    shuffled = SEMVER_ORDER[:]
    random.Random(7).shuffle(shuffled)
    assert sorted(shuffled, key=version_key) == SEMVER_ORDER


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "1.0.0+b1", "1.0.0-", "1.0.0-01",
                                     "\u0661.0.0"])  # an Arabic-Indic digit one
def test_version_key_refuses_what_is_not_semver(version: str) -> None:
    with pytest.raises(InvalidInput, match="is not a semantic version"):
        version_key(version)


def test_ancestors_and_descendants_follow_the_whole_graph() -> None:
    workflow = parse_workflow_doc(_doc(steps={
        "a": {"type": "notify"},
        "b": {"type": "notify", "depends_on": ["a"]},
        "c": {"type": "notify", "depends_on": ["a"]},
        "d": {"type": "notify", "depends_on": ["b", "c"]},
        "lone": {"type": "notify"},
    }))
    assert workflow.ancestors("d") == {"a", "b", "c"}
    assert workflow.ancestors("b") == {"a"}
    assert workflow.ancestors("a") == frozenset()
    assert workflow.descendants("a") == {"b", "c", "d"}
    assert workflow.descendants("c") == {"d"}
    assert workflow.descendants("lone") == workflow.ancestors("lone") == frozenset()
    with pytest.raises(NotFound, match="has no step 'zz'"):
        workflow.descendants("zz")
