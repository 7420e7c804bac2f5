"""Policy bundles: parsing, validation messages, normalised hashing and evaluation."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import pytest

from engine.core.errors import InvalidDefinition, InvalidInput, Problem
from engine.governance.policy import (
    MAX_BUNDLE_BYTES,
    MAX_CACHED_STEPS,
    MAX_RULES,
    Bundle,
    Decision,
    Facts,
    Verdict,
    default_bundle,
    parse_bundle,
    parse_bundle_doc,
)
from engine.governance.policy_match import parse_comparison

GUARDRAILS_YAML = """\
# a bundle like the one in docs/policy.md, with every match key
name: prod-guardrails
description: what production may run
default_decision: deny
default_reason: "nothing allowed this"
rules:
  - name: prod-apply-needs-approval     # first match wins
    match:
      topics: ["job.incident.patch.*"]
      workflows: [incident-remediation]
      steps: [apply_patch]
      tenants: [default]
      risk_tags: [prod]
      capability: [deploy, db-admin]
      labels: {env: prod}
      input:
        - input.amount > 1000
        - input.region == "eu"
        - input.tags contains "pci"
        - input.customer.tier in ["gold", "platinum"]
        - input.dry_run exists
    decision: require_approval
    reason: "prod changes need a second pair of eyes"
    constraints:
      approval_expires_in_ms: 3600000
      max_attempts: 1
  - name: bounded-patches
    match: {topics: ["job.incident.patch.*"]}
    decision: allow_with_constraints
    reason: patches are bounded
    constraints: {timeout_ms: 60000, sandbox: strict}
  - name: incident-jobs
    match: {topics: ["job.incident.*"]}
    decision: allow
    reason: read-only incident work
"""

# The same bundle as JSON: other key order, other whitespace, no comments, the list
# inside one match in another order and a comparison spelled without spaces.
GUARDRAILS_JSON = """{"rules": [
 {"reason": "prod changes need a second pair of eyes", "decision": "require_approval",
  "constraints": {"max_attempts": 1, "approval_expires_in_ms": 3600000},
  "match": {"labels": {"env": "prod"}, "capability": ["db-admin", "deploy"],
            "risk_tags": ["prod"], "tenants": ["default"], "steps": ["apply_patch"],
            "workflows": ["incident-remediation"], "topics": ["job.incident.patch.*"],
            "input": ["input.amount>1000", "input.region ==\\"eu\\"",
                      "input.tags contains \\"pci\\"",
                      "input.customer.tier in [\\"gold\\",\\"platinum\\"]",
                      "input.dry_run   exists"]},
  "name": "prod-apply-needs-approval"},
 {"name": "bounded-patches", "match": {"topics": ["job.incident.patch.*"]},
  "decision": "allow_with_constraints", "reason": "patches are bounded",
  "constraints": {"sandbox": "strict", "timeout_ms": 60000}},
 {"name": "incident-jobs", "match": {"topics": ["job.incident.*"]}, "decision": "allow",
  "reason": "read-only incident work"}],
 "default_reason": "nothing allowed this", "default_decision": "deny",
 "description": "what production may run", "name": "prod-guardrails"}"""

PROD_INPUT = {"amount": 5000, "region": "eu", "tags": ["pci", "x"],
              "customer": {"tier": "gold"}, "dry_run": False}


def facts(**changes: Any) -> Facts:
    """Facts that satisfy every key of the first GUARDRAILS rule."""
    base = Facts(tenant_id="default", workflow_id="incident-remediation", step_id="apply_patch",
                 topic="job.incident.patch.apply", risk_tags=("prod", "db"),
                 capability="deploy", labels={"env": "prod", "team": "sre"}, input=PROD_INPUT)
    return replace(base, **changes)


def bundle(*rules: str, default: str = "deny") -> Bundle:
    return parse_bundle(f"default_decision: {default}\nrules:\n" + "".join(rules))


def rule(name: str, decision: str = "allow", match: str = "{}", extra: str = "") -> str:
    return (f"  - name: {name}\n    match: {match}\n    decision: {decision}\n"
            f"    reason: because {name}\n" + (f"    {extra}\n" if extra else ""))


def problems(source: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(InvalidDefinition) as caught:
        if isinstance(source, str | bytes):
            parse_bundle(source, **kwargs)
        else:
            parse_bundle_doc(source)
    return [str(p) for p in caught.value.problems]


def one_problem(source: Any, **kwargs: Any) -> str:
    found = problems(source, **kwargs)
    assert len(found) == 1, found
    return found[0]


def doc(*rules: Any, **top: Any) -> dict[str, Any]:
    return {"default_decision": "deny", "rules": list(rules), **top}


def rule_doc(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "r", "decision": "allow", "reason": "because"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


# --------------------------------------------------------------------- the enum

def test_verdict_mirrors_the_postgres_enum_in_order() -> None:
    assert [v.value for v in Verdict] == ["allow", "deny", "require_approval",
                                          "allow_with_constraints"]


# --------------------------------------------------------------------- decisions

def test_the_design_example_gives_each_rule_its_decision() -> None:
    policy = parse_bundle(GUARDRAILS_YAML)
    assert (policy.name, policy.description) == ("prod-guardrails", "what production may run")
    first = policy.evaluate(facts())
    assert first == Decision(Verdict.REQUIRE_APPROVAL, "prod-apply-needs-approval",
                             "prod changes need a second pair of eyes",
                             {"approval_expires_in_ms": 3600000, "max_attempts": 1})
    assert first.to_doc() == {"decision": "require_approval", "rule": "prod-apply-needs-approval",
                              "reason": "prod changes need a second pair of eyes",
                              "constraints": {"approval_expires_in_ms": 3600000,
                                              "max_attempts": 1}}
    second = policy.evaluate(facts(labels={"env": "dev"}))
    assert (second.verdict, second.rule, dict(second.constraints)) == (
        Verdict.ALLOW_WITH_CONSTRAINTS, "bounded-patches", {"timeout_ms": 60000,
                                                            "sandbox": "strict"})
    third = policy.evaluate(facts(topic="job.incident.detect"))
    assert (third.verdict, third.rule, third.reason, dict(third.constraints)) == (
        Verdict.ALLOW, "incident-jobs", "read-only incident work", {})
    default = policy.evaluate(facts(topic="job.billing.charge"))
    assert default == Decision(Verdict.DENY, None, "nothing allowed this", {})
    assert default.to_doc() == {"decision": "deny", "rule": None,
                                "reason": "nothing allowed this", "constraints": {}}


@pytest.mark.parametrize(("decision", "extra", "constraints"), [
    ("allow", "", {}),
    ("deny", "", {}),
    ("require_approval", "", {}),
    ("require_approval", "constraints: {approval_expires_in_ms: 5000, timeout_ms: 10}",
     {"approval_expires_in_ms": 5000, "timeout_ms": 10}),
    ("allow_with_constraints", "constraints: {max_attempts: 2, sandbox: {net: false}}",
     {"max_attempts": 2, "sandbox": {"net": False}}),
    ("allow_with_constraints", "constraints: {note: null}", {"note": None}),
])
def test_each_decision_kind(decision: str, extra: str, constraints: dict[str, Any]) -> None:
    got = bundle(rule("only", decision, extra=extra)).evaluate(facts())
    assert (got.verdict, got.rule, got.reason, dict(got.constraints)) == (
        Verdict(decision), "only", "because only", constraints)


def test_the_first_matching_rule_wins_and_order_matters() -> None:
    allow, deny = rule("a", "allow", "{topics: ['job.*']}"), rule("d", "deny", "{}")
    assert bundle(allow, deny).evaluate(facts()).rule == "a"
    assert bundle(deny, allow).evaluate(facts()).rule == "d"
    assert bundle(allow, deny).evaluate(facts(topic="other")).rule == "d"


def test_without_a_match_the_default_decides_with_a_default_reason() -> None:
    policy = bundle(rule("a", "deny", "{topics: [nothing]}"), default="require_approval")
    assert policy.evaluate(facts()) == Decision(
        Verdict.REQUIRE_APPROVAL, None, "no rule matched (default: require_approval)", {})
    empty = parse_bundle("default_decision: allow")
    assert (empty.rules, empty.evaluate(facts()).verdict) == ((), Verdict.ALLOW)


@pytest.mark.parametrize("verdict", [Verdict.ALLOW, Verdict.DENY, Verdict.REQUIRE_APPROVAL])
def test_default_bundle(verdict: Verdict) -> None:
    got = default_bundle(verdict).evaluate(facts())
    assert got == Decision(verdict, None, "no policy is active for this tenant "
                                          f"(default: {verdict.value})", {})
    assert default_bundle(verdict).snapshot_hash == default_bundle(verdict).snapshot_hash


def test_default_bundle_refuses_allow_with_constraints() -> None:
    with pytest.raises(InvalidInput, match="must be one of allow, deny, require_approval"):
        default_bundle(Verdict.ALLOW_WITH_CONSTRAINTS)


def test_a_decision_document_is_a_copy() -> None:
    policy = bundle(rule("c", "allow_with_constraints",
                         extra="constraints: {tools: [a, b]}"))
    policy.evaluate(facts()).to_doc()["constraints"]["tools"].append("c")
    assert policy.evaluate(facts()).to_doc()["constraints"] == {"tools": ["a", "b"]}


# --------------------------------------------------------------------- match keys

@pytest.mark.parametrize(("match", "changes", "matches"), [
    ("{}", {}, True),                                        # empty match: everything
    ("{topics: ['job.incident.patch.apply']}", {}, True),    # exact name
    ("{topics: ['job.incident.patch.applyx']}", {}, False),
    ("{topics: ['job.*.apply']}", {}, True),                 # * spans dots
    ("{topics: ['job.*']}", {"topic": "jobs.x"}, False),
    ("{topics: ['job.incident.patch.appl?']}", {}, True),
    ("{topics: ['job.incident.patch.appl?']}", {"topic": "job.incident.patch.appl"}, False),
    ("{topics: ['job.incident.patch.[a-c]pply']}", {}, True),
    ("{topics: ['job.incident.patch.[!a]pply']}", {}, False),
    ("{topics: [x, 'job.incident.*']}", {}, True),           # any pattern may match
    ("{topics: ['JOB.*']}", {}, False),                      # case-sensitive
    ("{workflows: ['incident-*']}", {}, True),
    ("{workflows: ['incident-*']}", {"workflow_id": "payments"}, False),
    ("{steps: [apply_patch, rollback]}", {}, True),
    ("{steps: [rollback]}", {}, False),
    ("{tenants: ['def*']}", {}, True),
    ("{tenants: [acme]}", {}, False),
    ("{risk_tags: [pii, prod]}", {}, True),                  # any tag in common
    ("{risk_tags: [pii]}", {}, False),
    ("{risk_tags: [prod]}", {"risk_tags": ()}, False),
    ("{capability: deploy}", {}, True),                      # a single string
    ("{capability: [db-admin, deploy]}", {}, True),
    ("{capability: [db-admin]}", {}, False),
    ("{capability: [deploy]}", {"capability": None}, False),
    ("{labels: {env: prod}}", {}, True),                     # other labels may exist
    ("{labels: {env: prod, team: sre}}", {}, True),
    ("{labels: {env: prod, team: ops}}", {}, False),         # every label must be equal
    ("{labels: {region: eu}}", {}, False),                   # a missing label
    ("{labels: {}}", {"labels": {}}, True),
    ("{topics: ['job.*'], steps: [other]}", {}, False),      # keys combine with AND
    ("{input: []}", {}, True),
])
def test_match_keys(match: str, changes: dict[str, Any], matches: bool) -> None:
    got = bundle(rule("r", "allow", match)).evaluate(facts(**changes))
    assert (got.rule == "r") is matches


def test_risk_tags_given_as_a_list_are_accepted() -> None:
    policy = bundle(rule("r", "allow", "{risk_tags: [prod]}"))
    assert policy.evaluate(facts(risk_tags=["prod"])).rule == "r"


# --------------------------------------------------------------------- comparisons

NESTED = {"amount": 1500, "price": 9.5, "name": "beta", "flag": True, "zero": 0, "none": None,
          "tags": ["pci", 3, True, {"k": 1}], "customer": {"tier": "gold", "ids": [7, 8]},
          "items": [{"sku": "a"}, {"sku": "b"}], "text": "pci-dss", "count": "5"}


@pytest.mark.parametrize(("comparison", "matches"), [
    ("input.amount > 1000", True),
    ("input.amount > 1500", False),
    ("input.amount >= 1500", True),
    ("input.amount < 1500.5", True),
    ("input.amount <= 1499", False),
    ("input.price >= 9.5", True),
    ("input.name > \"alpha\"", True),                   # strings by code point
    ("input.name < \"b\"", False),
    ("input.amount == 1500.0", True),                   # 1500 equals 1500.0
    ("input.amount == 1500", True),
    ("input.amount != 1500", False),
    ("input.amount != 1", True),
    ("input.name == \"beta\"", True),
    ("input.name != \"beta\"", False),
    ("input.customer == {\"tier\": \"gold\", \"ids\": [7, 8]}", True),
    ("input.customer.ids == [7, 8.0]", True),
    ("input.customer.ids == [8, 7]", False),
    ("input.none == null", True),
    ("input.customer.tier in [\"gold\", \"platinum\"]", True),
    ("input.customer.tier in [\"silver\"]", False),
    ("input.amount in [1, 1500]", True),
    ("input.flag in [1, \"true\"]", False),            # true is not 1
    ("input.flag in [true]", True),
    ("input.zero in [false, null]", False),            # 0 is not false
    ("input.none in [null]", True),
    ("input.customer.ids in [[7, 8], 3]", True),
    ("input.tags contains \"pci\"", True),
    ("input.tags contains \"dss\"", False),
    ("input.tags contains 3", True),
    ("input.tags contains 1", False),                  # the list holds true, not 1
    ("input.tags contains {\"k\": 1}", True),
    ("input.text contains \"pci\"", False),            # a string field is not a list
    ("input.customer.tier exists", True),
    ("input.none exists", True),                       # null is present
    ("input.dry_run exists", False),
    ("input.items.1.sku == \"b\"", True),              # digits index a list
    ("input.items.2.sku exists", False),
    ("input.customer.ids.0 == 7", True),
])
def test_comparisons(comparison: str, matches: bool) -> None:
    policy = bundle(rule("r", "allow", json.dumps({"input": [comparison]})))
    assert (policy.evaluate(facts(input=NESTED)).rule == "r") is matches


@pytest.mark.parametrize("comparison", [
    # a missing field: every operator is false, != included
    "input.missing > 1", "input.missing < 1", "input.missing == null",
    "input.missing != 1", "input.missing in [1]", "input.missing contains 1",
    "input.customer.missing.deeper == 1", "input.amount.deeper == 1",
    "input.items.x == 1",
    # a type mismatch
    "input.count > 1",             # "5" is a string
    "input.amount > \"1\"",
    "input.flag > 0",              # a boolean is not a number
    "input.flag >= 1",
    "input.flag == 1",
    "input.zero == false",
    "input.count == 5",
    "input.customer > 1",
    "input.tags <= 1",
])
def test_a_missing_field_or_a_type_mismatch_does_not_match(comparison: str) -> None:
    policy = bundle(rule("r", "allow", json.dumps({"input": [comparison]})))
    assert policy.evaluate(facts(input=NESTED)).rule is None


def test_not_equal_across_types_holds_for_present_fields() -> None:
    policy = bundle(rule("r", "allow", json.dumps({"input": ["input.count != 5"]})))
    assert policy.evaluate(facts(input=NESTED)).rule == "r"


@pytest.mark.parametrize("run_input", [None, 5, "x", ["amount"], {}])
def test_an_input_that_is_not_a_mapping_matches_no_comparison(run_input: Any) -> None:
    policy = bundle(rule("r", "allow", json.dumps({"input": ["input.amount exists"]})))
    assert policy.evaluate(facts(input=run_input)).rule is None


def test_every_comparison_of_a_rule_must_hold() -> None:
    policy = parse_bundle(GUARDRAILS_YAML)
    assert policy.evaluate(facts()).rule == "prod-apply-needs-approval"
    for key in PROD_INPUT:
        partial = {k: v for k, v in PROD_INPUT.items() if k != key}
        assert policy.evaluate(facts(input=partial)).rule == "bounded-patches", key


@pytest.mark.parametrize(("written", "normalised"), [
    ("input.amount>1000", "input.amount > 1000"),
    ("  input.amount   >=   1e3 ", "input.amount >= 1000.0"),
    ("input.a-b.c_d == \"x\"", "input.a-b.c_d == \"x\""),
    ("input.tier in [ \"gold\" ,\"platinum\" ]", "input.tier in [\"gold\",\"platinum\"]"),
    ("input.o == {\"b\": 1, \"a\": [true, null]}", "input.o == {\"a\":[true,null],\"b\":1}"),
    ("input.flag\texists", "input.flag exists"),
    ("input.tags contains \"é\"", "input.tags contains \"é\""),
])
def test_comparisons_are_normalised(written: str, normalised: str) -> None:
    assert parse_comparison(written).text == normalised


# --------------------------------------------------------------------- hashing

def test_the_hash_ignores_key_order_whitespace_comments_and_format() -> None:
    from_yaml, from_json = parse_bundle(GUARDRAILS_YAML), parse_bundle(GUARDRAILS_JSON)
    assert from_yaml == from_json
    assert from_yaml.to_doc() == from_json.to_doc()
    assert from_yaml.snapshot_hash == from_json.snapshot_hash
    assert len(from_yaml.snapshot_hash) == 64
    reformatted = json.dumps(json.loads(GUARDRAILS_JSON), indent=4, sort_keys=True)
    assert parse_bundle(reformatted.encode(), media_type="application/json").snapshot_hash \
        == from_yaml.snapshot_hash


def test_the_hash_changes_with_any_rule_change_and_with_rule_order() -> None:
    base = parse_bundle(GUARDRAILS_YAML)
    variants = [
        GUARDRAILS_YAML.replace("patches are bounded", "patches are limited"),
        GUARDRAILS_YAML.replace("input.amount > 1000", "input.amount > 1001"),
        GUARDRAILS_YAML.replace("timeout_ms: 60000", "timeout_ms: 60001"),
        GUARDRAILS_YAML.replace("decision: allow\n", "decision: deny\n"),
        GUARDRAILS_YAML.replace("default_decision: deny", "default_decision: allow"),
        GUARDRAILS_YAML.replace("name: incident-jobs", "name: incident-work"),
    ]
    hashes = {parse_bundle(v).snapshot_hash for v in variants}
    assert len(hashes) == len(variants) and base.snapshot_hash not in hashes
    swapped = json.loads(GUARDRAILS_JSON)
    swapped["rules"][1], swapped["rules"][2] = swapped["rules"][2], swapped["rules"][1]
    assert parse_bundle_doc(swapped).snapshot_hash != base.snapshot_hash


def test_to_doc_and_from_doc_round_trip() -> None:
    policy = parse_bundle(GUARDRAILS_YAML)
    stored = json.loads(json.dumps(policy.to_doc()))  # what jsonb gives back
    assert stored["rules"][0]["match"]["input"][0] == "input.amount > 1000"
    assert stored["rules"][0]["match"]["capability"] == ["db-admin", "deploy"]
    again = Bundle.from_doc(stored)
    assert again == policy
    assert again.to_doc() == policy.to_doc()
    assert again.snapshot_hash == policy.snapshot_hash
    reordered = {key: stored[key] for key in reversed(list(stored))}
    assert Bundle.from_doc(reordered).snapshot_hash == policy.snapshot_hash
    assert policy.to_doc()["rules"][2] == {
        "name": "incident-jobs", "match": {"topics": ["job.incident.*"]}, "decision": "allow",
        "reason": "read-only incident work", "constraints": {}}


def test_the_normalised_document_fills_in_defaults() -> None:
    policy = parse_bundle("default_decision: allow\nrules: [{name: a, decision: deny, "
                          "reason: r}]")
    assert policy.to_doc() == {
        "name": None, "description": None, "default_decision": "allow",
        "default_reason": "no rule matched (default: allow)",
        "rules": [{"name": "a", "match": {}, "decision": "deny", "reason": "r",
                   "constraints": {}}]}
    assert default_bundle(Verdict.DENY).to_doc()["rules"] == []


# --------------------------------------------------------------------- validation

@pytest.mark.parametrize(("document", "message"), [
    ([1], "a policy bundle must be a mapping, got a list"),
    (doc(version=2), "version: unknown field 'version' in a policy bundle (allowed: name, "
                     "description, default_decision, default_reason, rules)"),
    ({"rules": []}, "default_decision: missing required field 'default_decision' "
                    "(one of: allow, deny, require_approval)"),
    (doc(default_decision="maybe"), "default_decision: unknown decision 'maybe' "
                                    "(allowed: allow, deny, require_approval)"),
    (doc(default_decision=True), "default_decision: unknown decision true (a boolean) "
                                 "(allowed: allow, deny, require_approval)"),
    (doc(default_decision="allow_with_constraints"),
     "default_decision: allow_with_constraints cannot be the default: constraints belong "
     "to a rule; use one of allow, deny, require_approval"),
    (doc(default_reason=""), "default_reason: must not be empty"),
    (doc(name=3), "name: must be a string, got 3 (a number)"),
    ({"default_decision": "deny", "rules": {"a": 1}},
     "rules: must be a list of rules, got a mapping"),
    (doc("allow"), "rules[0]: a rule must be a mapping, got 'allow' (a string)"),
    (doc(rule_doc(when="always")), "rules[0].when: unknown field 'when' in a rule (allowed: "
                                   "name, match, decision, reason, constraints)"),
    (doc(rule_doc(name=...)), "rules[0].name: missing required field 'name'"),
    (doc(rule_doc(name="-bad name")),
     "rules[0].name: '-bad name' is not a valid rule name (letters, digits, '.', '_', '-'; "
     "starting with a letter or digit; at most 64 characters)"),
    (doc(rule_doc(name="x" * 65)), "rules[0].name: is 65 characters long; the limit is 64"),
    (doc(rule_doc(decision=...)), "rules[0].decision: missing required field 'decision' "
                                  "(one of: allow, deny, require_approval, "
                                  "allow_with_constraints)"),
    (doc(rule_doc(decision="permit")), "rules[0].decision: unknown decision 'permit' "
                                       "(allowed: allow, deny, require_approval, "
                                       "allow_with_constraints)"),
    (doc(rule_doc(reason=...)), "rules[0].reason: missing required field 'reason'"),
    (doc(rule_doc(match=["topics"])), "rules[0].match: must be a mapping, got a list"),
    (doc(rule_doc(match={"topic": ["a"]})),
     "rules[0].match.topic: unknown field 'topic' in a rule's match (allowed: topics, "
     "workflows, steps, tenants, risk_tags, capability, labels, input)"),
    (doc(rule_doc(match={"topics": "job.*"})),
     "rules[0].match.topics: must be a list of strings, got 'job.*' (a string)"),
    (doc(rule_doc(match={"topics": []})),
     "rules[0].match.topics: must list at least one value; omit 'topics' to match any"),
    (doc(rule_doc(match={"steps": ["a", 5]})),
     "rules[0].match.steps[1]: must be a non-empty string, got 5 (a number)"),
    (doc(rule_doc(match={"workflows": ["ok", "bad[glob"]})),
     "rules[0].match.workflows[1]: 'bad[glob' is not a valid glob: '[' at position 3 is "
     "never closed (write '[[]' for a literal '[')"),
    (doc(rule_doc(match={"tenants": ["x" * 257]})),
     "rules[0].match.tenants[0]: is longer than 256 characters"),
    (doc(rule_doc(match={"risk_tags": [None]})),
     "rules[0].match.risk_tags[0]: must be a non-empty string, got null"),
    (doc(rule_doc(match={"capability": 7})),
     "rules[0].match.capability: must be a list of strings, got 7 (a number)"),
    (doc(rule_doc(match={"capability": ""})), "rules[0].match.capability: must not be empty"),
    (doc(rule_doc(match={"labels": ["env"]})),
     "rules[0].match.labels: must be a mapping, got a list"),
    (doc(rule_doc(match={"labels": {"env": 1}})),
     "rules[0].match.labels.env: must be a string of at most 1024 characters, "
     "got 1 (a number)"),
    (doc(rule_doc(match={"input": "input.a > 1"})),
     "rules[0].match.input: must be a list of comparisons such as 'input.amount > 1000', "
     "got 'input.a > 1' (a string)"),
    (doc(rule_doc(match={"input": [{"a": 1}]})),
     "rules[0].match.input[0]: must be a comparison string such as 'input.amount > 1000', "
     "got a mapping"),
    (doc(rule_doc(match={"input": ["amount > 1"]})),
     "rules[0].match.input[0]: 'amount > 1' must start with a field path such as "
     "input.amount (segments of letters, digits, '_' or '-' after 'input.')"),
    (doc(rule_doc(match={"input": ["input > 1"]})),
     "rules[0].match.input[0]: 'input > 1' must start with a field path such as "
     "input.amount (segments of letters, digits, '_' or '-' after 'input.')"),
    (doc(rule_doc(match={"input": ["input.a => 1"]})),
     "rules[0].match.input[0]: expected an operator (==, !=, >, >=, <, <=, in, contains, "
     "exists) after 'input.a', got '=> 1'"),
    (doc(rule_doc(match={"input": ["input.a.b ~ 1"]})),
     "rules[0].match.input[0]: expected an operator (==, !=, >, >=, <, <=, in, contains, "
     "exists) after 'input.a.b', got '~ 1'"),
    (doc(rule_doc(match={"input": ["input.a in"]})),
     "rules[0].match.input[0]: 'in' needs a JSON value after it, e.g. [\"gold\", "
     "\"platinum\"]"),
    (doc(rule_doc(match={"input": ["input.a >"]})),
     "rules[0].match.input[0]: '>' needs a JSON value after it, e.g. 1000 or \"eu\""),
    (doc(rule_doc(match={"input": ["input.region == eu"]})),
     "rules[0].match.input[0]: the value after '==' must be JSON (a number, a \"quoted "
     "string\", true, false, null or a list): invalid JSON at line 1, column 1: "
     "Expecting value"),
    (doc(rule_doc(match={"input": ["input.a == NaN"]})),
     "rules[0].match.input[0]: the value after '==' must be JSON (a number, a \"quoted "
     "string\", true, false, null or a list): NaN is not a JSON number"),
    (doc(rule_doc(match={"input": ["input.a exists true"]})),
     "rules[0].match.input[0]: 'exists' takes no value, got 'true'"),
    (doc(rule_doc(match={"input": ["input.a in \"gold\""]})),
     "rules[0].match.input[0]: 'in' needs a non-empty list, e.g. [\"gold\", \"platinum\"], "
     "got 'gold' (a string)"),
    (doc(rule_doc(match={"input": ["input.a in []"]})),
     "rules[0].match.input[0]: 'in' needs a non-empty list, e.g. [\"gold\", \"platinum\"], "
     "got a list"),
    (doc(rule_doc(match={"input": ["input.a > [1]"]})),
     "rules[0].match.input[0]: '>' compares numbers or strings, got a list"),
    (doc(rule_doc(match={"input": ["input.a <= true"]})),
     "rules[0].match.input[0]: '<=' compares numbers or strings, got true (a boolean)"),
    (doc(rule_doc(match={"input": ["input.a == " + "1" * 1100]})),
     "rules[0].match.input[0]: is longer than 1024 characters"),
    (doc(rule_doc(constraints={"timeout_ms": 5})),
     "rules[0].constraints: constraints are only allowed with allow_with_constraints, "
     "require_approval, not with allow"),
    (doc(rule_doc(decision="deny", constraints={"x": 1})),
     "rules[0].constraints: constraints are only allowed with allow_with_constraints, "
     "require_approval, not with deny"),
    (doc(rule_doc(decision="allow_with_constraints")),
     "rules[0].constraints: allow_with_constraints needs at least one constraint "
     "(e.g. timeout_ms: 60000); use allow for none"),
    (doc(rule_doc(decision="allow_with_constraints", constraints={})),
     "rules[0].constraints: allow_with_constraints needs at least one constraint "
     "(e.g. timeout_ms: 60000); use allow for none"),
    (doc(rule_doc(decision="require_approval", constraints=[1])),
     "rules[0].constraints: must be a mapping, got a list"),
    (doc(rule_doc(decision="require_approval", constraints={"max_attempts": 0})),
     "rules[0].constraints.max_attempts: must be between 1 and 100, got 0"),
    (doc(rule_doc(decision="require_approval", constraints={"max_attempts": "2"})),
     "rules[0].constraints.max_attempts: must be an integer, got '2' (a string)"),
    (doc(rule_doc(decision="require_approval", constraints={"max_attempts": True})),
     "rules[0].constraints.max_attempts: must be an integer, got true (a boolean)"),
    (doc(rule_doc(decision="allow_with_constraints", constraints={"timeout_ms": 2**31})),
     "rules[0].constraints.timeout_ms: must be between 1 and 2147483647, got 2147483648"),
    (doc(rule_doc(decision="require_approval", constraints={"approval_expires_in_ms": None})),
     "rules[0].constraints.approval_expires_in_ms: must be an integer, got null"),
    (doc(rule_doc(decision="allow_with_constraints", constraints={"timeout_ms": 1.5})),
     "rules[0].constraints.timeout_ms: must be an integer, got 1.5 (a number)"),
    (doc(rule_doc(decision="allow_with_constraints",
                  constraints={"approval_expires_in_ms": 1000})),
     "rules[0].constraints.approval_expires_in_ms: 'approval_expires_in_ms' only applies "
     "to require_approval"),
    (doc(rule_doc(decision="allow_with_constraints", constraints={"tools": {1, 2}})),
     "rules[0].constraints.tools: a set is not a JSON value"),
    (doc(rule_doc(decision="allow_with_constraints", constraints={"x": float("nan")})),
     "rules[0].constraints.x: must be a finite number, got nan"),
])
def test_validation_messages(document: Any, message: str) -> None:
    assert one_problem(document) == message


def test_duplicate_rule_names_point_at_the_first() -> None:
    document = doc(rule_doc(name="a"), rule_doc(name="b"), rule_doc(name="a"))
    assert one_problem(document) == "rules[2].name: duplicate rule name 'a' (also rules[0])"


def test_too_many_rules() -> None:
    document = doc(*[rule_doc(name=f"r{i}") for i in range(MAX_RULES + 1)])
    assert one_problem(document) == "rules: 1001 rules; the limit is 1000"
    assert len(parse_bundle_doc(doc(*[rule_doc(name=f"r{i}")
                                      for i in range(MAX_RULES)])).rules) == MAX_RULES


def test_too_large_a_source() -> None:
    source = "default_decision: deny\n#" + "x" * MAX_BUNDLE_BYTES
    assert one_problem(source) == (f"the policy bundle is {len(source)} bytes; "
                                   f"the limit is {MAX_BUNDLE_BYTES} bytes")
    assert one_problem(source.encode()).startswith("the policy bundle is")


def test_too_deep_a_constraint() -> None:
    deep: Any = 1
    for _ in range(20):
        deep = {"d": deep}
    found = one_problem(doc(rule_doc(decision="allow_with_constraints",
                                     constraints={"x": deep})))
    assert found.startswith("rules[0].constraints.x.d.d.d.d.d.d.d.d.d.d.d.d: nested more "
                            "than 16 levels deep")


def test_every_problem_is_reported_at_once() -> None:
    source = """\
default_decision: sometimes
extra: 1
rules:
  - name: ok
    decision: allow
    reason: fine
  - name: ok
    match:
      topics: ["a[b"]
      input: ["input.amount >> 3", "input.x == 1"]
    decision: allow_with_constraints
    reason: dup
  - decision: deny
    constraints: {timeout_ms: 1}
"""
    assert problems(source) == [
        "extra: unknown field 'extra' in a policy bundle (allowed: name, description, "
        "default_decision, default_reason, rules)",
        "default_decision: unknown decision 'sometimes' (allowed: allow, deny, "
        "require_approval)",
        "rules[1].name: duplicate rule name 'ok' (also rules[0])",
        "rules[1].match.topics[0]: 'a[b' is not a valid glob: '[' at position 1 is never "
        "closed (write '[[]' for a literal '[')",
        "rules[1].match.input[0]: the value after '>' must be JSON (a number, a \"quoted "
        "string\", true, false, null or a list): invalid JSON at line 1, column 1: "
        "Expecting value",
        "rules[1].constraints: allow_with_constraints needs at least one constraint "
        "(e.g. timeout_ms: 60000); use allow for none",
        "rules[2].name: missing required field 'name'",
        "rules[2].reason: missing required field 'reason'",
        "rules[2].constraints: constraints are only allowed with allow_with_constraints, "
        "require_approval, not with deny",
    ]


@pytest.mark.parametrize(("source", "message"), [
    ("default_decision: &d deny\nrules: []\ndefault_reason: *d\n",
     "YAML anchors and aliases are not allowed"),
    ("default_decision: deny\ndefault_decision: allow\n", "duplicate key 'default_decision'"),
    ('{"default_decision": "deny", "default_decision": "allow"}',
     "default_decision: duplicate key 'default_decision'"),
    ("default_decision: deny\nrules: [\n", "invalid YAML"),
    ("default_decision: !!python/object:os.system deny\n", "YAML tag"),
])
def test_unsafe_or_broken_documents_are_refused_by_the_decoder(source: str,
                                                               message: str) -> None:
    assert message in one_problem(source)


def test_json_and_yaml_media_types() -> None:
    as_json = parse_bundle(GUARDRAILS_JSON.encode(), media_type="application/json")
    as_yaml = parse_bundle(GUARDRAILS_YAML.encode(), media_type="application/yaml")
    assert as_json.snapshot_hash == as_yaml.snapshot_hash
    assert "unsupported media type" in one_problem("{}", media_type="text/plain")


def test_a_problem_is_located_by_path() -> None:
    with pytest.raises(InvalidDefinition) as caught:
        parse_bundle_doc(doc(rule_doc(decision="nope")))
    assert caught.value.problems == (Problem("rules[0].decision", "unknown decision 'nope' "
                                             "(allowed: allow, deny, require_approval, "
                                             "allow_with_constraints)"),)


# --------------------------------------------------------------------- evaluation cache

def test_evaluation_is_right_for_more_steps_than_the_cache_holds() -> None:
    policy = bundle(rule("odd", "deny", "{steps: ['*1', '*3', '*5', '*7', '*9']}"),
                    rule("amount", "allow", json.dumps({"input": ["input.n > 10"]})),
                    default="require_approval")
    for n in range(MAX_CACHED_STEPS * 2 + 10):
        got = policy.evaluate(facts(step_id=f"s{n}", input={"n": n % 20}))
        expected = "odd" if n % 2 else ("amount" if n % 20 > 10 else None)
        assert got.rule == expected, n
    assert len(policy._plans) <= MAX_CACHED_STEPS


def test_the_same_step_with_other_input_or_labels_is_evaluated_again() -> None:
    policy = bundle(rule("big", "deny", json.dumps({"input": ["input.n > 10"],
                                                   "labels": {"env": "prod"}})))
    assert policy.evaluate(facts(input={"n": 11})).rule == "big"
    assert policy.evaluate(facts(input={"n": 9})).rule is None
    assert policy.evaluate(facts(input={"n": 11}, labels={"env": "dev"})).rule is None
    assert policy.evaluate(facts(input={"n": 11})).rule == "big"


def test_a_rule_that_always_matches_shadows_later_rules() -> None:
    policy = bundle(rule("all", "deny"), rule("never", "allow", "{topics: ['job.*']}"))
    assert [policy.evaluate(facts(step_id=s)).rule for s in ("a", "b")] == ["all", "all"]


def test_bundles_compare_by_content() -> None:
    first, second = parse_bundle(GUARDRAILS_YAML), parse_bundle(GUARDRAILS_YAML)
    first.evaluate(facts())  # a warm cache does not make it a different bundle
    assert first == second
    assert copy.deepcopy(first.to_doc()) == second.to_doc()
