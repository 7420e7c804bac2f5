"""Which steps get a dispatch plan, and the decision a plan records
(engine/scheduling/plans.py, docs/design.md#dispatch-in-the-completion)."""

from __future__ import annotations

from engine.definitions.model import parse_workflow
from engine.governance.decisions import ActivePolicy
from engine.governance.policy import Facts, Verdict, default_bundle, parse_bundle
from engine.scheduling.plans import dispatchable_in_sql, plans_for
from engine.store.dispatch_plans import NewPlan

WORKFLOW = parse_workflow("""
id: w
name: w
version: 1.0.0
steps:
  root: {type: job, topic: t.x}
  plain: {type: job, topic: t.x, depends_on: [root]}
  constant: {type: job, topic: t.x, depends_on: [root], input: {n: 1, tags: [a, b]}}
  templated: {type: job, topic: t.x, depends_on: [root], input: {v: "${input.v}"}}
  escaped: {type: job, topic: t.x, depends_on: [root], input: {v: "$${literal}"}}
  conditional: {type: job, topic: t.x, depends_on: [root], when: "input.go == true"}
  items: {type: job, topic: t.x, depends_on: [root], for_each: "${input.list}"}
  keyed: {type: job, topic: t.x, depends_on: [root], concurrency: {key: k, limit: 2}}
  rated: {type: job, topic: t.x, depends_on: [root], rate_limit: {key: r, limit: 5, per_ms: 1000}}
  ask: {type: approval, depends_on: [root]}
  labelled:
    type: job
    topic: t.y
    depends_on: [root]
    meta: {labels: {env: prod}}
""")


def test_only_steps_a_completion_can_dispatch_with_their_rows_alone() -> None:
    dispatchable = {sid for sid, step in WORKFLOW.steps.items() if dispatchable_in_sql(step)}
    assert dispatchable == {"plain", "constant", "labelled"}


def policy(source: str) -> ActivePolicy:
    bundle = parse_bundle(source)
    return ActivePolicy(bundle.snapshot_hash, bundle)


def test_plans_carry_the_rule_that_allows_and_the_constant_input() -> None:
    plans = plans_for(WORKFLOW, "t1", policy("""
default_decision: allow
rules:
  - name: prod-ok
    match: {labels: {env: prod}}
    decision: allow
    reason: prod is fine
"""))
    assert plans == [
        NewPlan("plain", None, "no rule matched (default: allow)", None),
        NewPlan("constant", None, "no rule matched (default: allow)",
                {"n": 1, "tags": ["a", "b"]}),
        NewPlan("labelled", "prod-ok", "prod is fine", None)]
    assert isinstance(plans[1].input, dict) and isinstance(plans[1].input["tags"], list)


def test_no_plan_without_a_snapshot_or_where_the_input_or_a_verdict_decides() -> None:
    # the configured default is each process's own
    assert plans_for(WORKFLOW, "t1", ActivePolicy(None, default_bundle(Verdict.ALLOW))) == []
    # a rule on the input before the deciding one: no step is decided for every input
    assert plans_for(WORKFLOW, "t1", policy("""
default_decision: allow
rules:
  - name: big
    match: {input: ["input.amount > 100"]}
    decision: deny
    reason: too big
""")) == []
    # a rule on the input that cannot match a step does not keep its plan away
    assert [p.step_id for p in plans_for(WORKFLOW, "t1", policy("""
default_decision: allow
rules:
  - name: big-y
    match: {topics: [t.y], input: ["input.amount > 100"]}
    decision: require_approval
    reason: big y
"""))] == ["plain", "constant"]
    # denials, approvals and constraints are the scheduler's
    assert [p.step_id for p in plans_for(WORKFLOW, "t1", policy("""
default_decision: deny
rules:
  - name: x-slow
    match: {topics: [t.x]}
    decision: allow_with_constraints
    reason: slow
    constraints: {timeout_ms: 100}
  - name: y-ok
    match: {topics: [t.y]}
    decision: allow
    reason: y
"""))] == ["labelled"]


def test_decision_for_any_input_is_what_evaluate_says_for_every_input() -> None:
    bundle = parse_bundle("""
default_decision: deny
rules:
  - name: prod-y
    match: {topics: [t.y], labels: {env: prod}}
    decision: allow
    reason: prod y
  - name: big
    match: {input: ["input.amount > 100"]}
    decision: require_approval
    reason: big
  - name: rest
    match: {}
    decision: allow
    reason: rest
""")
    prod_y = Facts("t1", "w", "s", "t.y", labels={"env": "prod"})
    other = Facts("t1", "w", "s", "t.x")
    decided = bundle.decision_for_any_input(prod_y)
    assert decided is not None and decided.rule == "prod-y"
    for amount in (1, 1000):
        assert bundle.evaluate(Facts("t1", "w", "s", "t.y", labels={"env": "prod"},
                                     input={"amount": amount})) == decided
    assert bundle.decision_for_any_input(other) is None
    assert {bundle.evaluate(Facts("t1", "w", "s", "t.x", input={"amount": amount})).rule
            for amount in (1, 1000)} == {"big", "rest"}
