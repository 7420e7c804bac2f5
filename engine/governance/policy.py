"""Policy bundles (docs/policy.md): parse, validate, normalise, hash and evaluate. No I/O.

A bundle is an ordered list of rules and a default decision; the first rule whose
``match`` holds decides, otherwise the default does. Validation collects every problem
and raises one InvalidDefinition listing them, each at a dotted path such as
``rules[2].match.input[0]``. ``Bundle.to_doc`` is the normalised document that is
stored (jsonb) and hashed: its sha256 (``snapshot_hash``) does not change with key
order, whitespace, comments, YAML vs JSON, or the order of names inside a match list —
and does change when a rule changes or rules are reordered.

Matching, including the input comparisons and their semantics (a missing field or a
type mismatch makes a comparison **false**, so the rule does not match), is described
and compiled in ``engine.governance.policy_match``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from types import MappingProxyType
from typing import Any

from engine.core.canonical import sha256_hex
from engine.core.errors import InvalidDefinition, InvalidInput, Problem
from engine.definitions.docdecode import child_path, decode
from engine.definitions.docfields import FieldReader, check_values, describe
from engine.definitions.model import MAX_DURATION_MS
from engine.governance.policy_match import SLOT_INPUT, Check, Match, read_match


class Verdict(StrEnum):
    """Mirrors the Postgres enum ``warden.policy_decision`` (same values, same order)."""

    ALLOW = "allow"
    """The work may run as defined."""
    DENY = "deny"
    """The work must not run; the step and run end denied."""
    REQUIRE_APPROVAL = "require_approval"
    """The work waits for a human approval bound to the snapshot and the job hash."""
    ALLOW_WITH_CONSTRAINTS = "allow_with_constraints"
    """The work may run within the rule's constraints (enforced or handed to the worker)."""


MAX_BUNDLE_BYTES = 1024 * 1024
MAX_RULES = 1000
MAX_DEPTH = 16
MAX_REASON_LEN = 1000
MAX_ATTEMPTS = 100  # the same cap as a step's retries.max_attempts
MAX_TIMEOUT_MS = 2**31 - 1  # warden.jobs.timeout_ms is a 32-bit integer
MAX_CACHED_STEPS = 1024

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_NAME_RULE = ("a valid rule name (letters, digits, '.', '_', '-'; starting with a letter "
              "or digit; at most 64 characters)")
_TOP_FIELDS = ("name", "description", "default_decision", "default_reason", "rules")
_RULE_FIELDS = ("name", "match", "decision", "reason", "constraints")
_DEFAULTS = (Verdict.ALLOW, Verdict.DENY, Verdict.REQUIRE_APPROVAL)
_CONSTRAINED = (Verdict.ALLOW_WITH_CONSTRAINTS, Verdict.REQUIRE_APPROVAL)
# Constraints the engine enforces itself: (upper bound, verdicts it applies to).
_ENFORCED = {"max_attempts": (MAX_ATTEMPTS, _CONSTRAINED),
             "timeout_ms": (MAX_TIMEOUT_MS, _CONSTRAINED),
             "approval_expires_in_ms": (MAX_DURATION_MS, (Verdict.REQUIRE_APPROVAL,))}


@dataclass(frozen=True)
class Facts:
    """What a rule can look at: the job being gated and the input it will receive."""

    tenant_id: str
    workflow_id: str
    step_id: str
    topic: str
    risk_tags: tuple[str, ...] = ()
    capability: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    input: Any = None
    """The run input (submit gate) or the rendered job input (dispatch gate)."""

    def __post_init__(self) -> None:
        # Part of a cache key in Bundle.evaluate, so it must be hashable.
        if not isinstance(self.risk_tags, tuple):
            object.__setattr__(self, "risk_tags", tuple(self.risk_tags))


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    rule: str | None
    """The rule that fired; None when the bundle's default decided."""
    reason: str
    constraints: Mapping[str, Any]

    def to_doc(self) -> dict[str, Any]:
        # A deep copy: decisions are shared by every evaluation that hits the same rule.
        return {"decision": self.verdict.value, "rule": self.rule, "reason": self.reason,
                "constraints": copy.deepcopy(dict(self.constraints)) if self.constraints
                else {}}


@dataclass(frozen=True)
class Rule:
    name: str
    match: Match
    verdict: Verdict
    reason: str
    constraints: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @cached_property
    def decision(self) -> Decision:
        """The decision this rule gives, built once and shared by every evaluation."""
        return Decision(self.verdict, self.name, self.reason, self.constraints)

    def to_doc(self) -> dict[str, Any]:
        return {"name": self.name, "match": self.match.to_doc(), "decision": self.verdict.value,
                "reason": self.reason, "constraints": copy.deepcopy(dict(self.constraints))}


# (dynamic checks, decision) of each rule a step can still hit, in bundle order.
_Plan = tuple[tuple[tuple[Check, ...], Decision], ...]


class _Plans(dict[tuple[Any, ...], _Plan]):
    """Per static fact key (a step's identity): the rules whose static checks hold.

    Built on first use and dropped whole when full: a bundle sees a bounded set of
    steps, and rebuilding one entry costs a single pass over the rules.
    """

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        super().__init__()
        self._rules = rules

    def __missing__(self, key: tuple[Any, ...]) -> _Plan:
        plan: list[tuple[tuple[Check, ...], Decision]] = []
        for rule in self._rules:
            for slot, test in rule.match.static:
                if not test(key[slot]):
                    break
            else:
                plan.append((rule.match.dynamic, rule.decision))
                if not rule.match.dynamic:
                    break  # it always fires: no later rule can
        if len(self) >= MAX_CACHED_STEPS:
            self.clear()
        self[key] = result = tuple(plan)
        return result


@dataclass(frozen=True)
class Bundle:
    rules: tuple[Rule, ...]
    default_decision: Verdict
    default_reason: str
    name: str | None = None
    description: str | None = None
    _plans: _Plans = field(init=False, repr=False, compare=False)
    _default: Decision = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_plans", _Plans(self.rules))
        object.__setattr__(self, "_default", Decision(self.default_decision, None,
                                                      self.default_reason, MappingProxyType({})))

    def to_doc(self) -> dict[str, Any]:
        """The normalised document: every field present, stored as jsonb and hashed."""
        return {"name": self.name, "description": self.description,
                "default_decision": self.default_decision.value,
                "default_reason": self.default_reason,
                "rules": [rule.to_doc() for rule in self.rules]}

    @cached_property
    def snapshot_hash(self) -> str:
        """sha256 of the canonical JSON of ``to_doc()``: the snapshot's name."""
        return sha256_hex(self.to_doc())

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Bundle:
        """The inverse of ``to_doc`` (same bundle, same hash); the document is validated again."""
        return parse_bundle_doc(doc)

    def evaluate(self, facts: Facts) -> Decision:
        """The first rule whose every check holds decides; otherwise the default."""
        # Same order as policy_match.STATIC_SLOTS.
        plan = self._plans[(facts.tenant_id, facts.workflow_id, facts.step_id, facts.topic,
                            facts.risk_tags, facts.capability)]
        if plan:
            values = (facts.labels.items(), facts.input)  # SLOT_LABELS, SLOT_INPUT
            for checks, decision in plan:
                for slot, test in checks:
                    if not test(values[slot]):
                        break
                else:
                    return decision
        return self._default

    def decision_for_any_input(self, facts: Facts) -> Decision | None:
        """What ``evaluate`` decides for these facts whatever their input, or None when
        the input could change it: a rule that looks at the input could fire before the
        one (or the default) that decides without it. ``facts.input`` is not read. What
        lets a completing transaction apply the decision in SQL
        (docs/design.md#dispatch-in-the-completion)."""
        plan = self._plans[(facts.tenant_id, facts.workflow_id, facts.step_id, facts.topic,
                            facts.risk_tags, facts.capability)]
        labels = facts.labels.items()
        for checks, decision in plan:
            if any(slot == SLOT_INPUT for slot, _ in checks):
                return None
            if all(test(labels) for _, test in checks):
                return decision
        return self._default


def default_bundle(verdict: Verdict) -> Bundle:
    """What decides for a tenant without an active snapshot (the configured default)."""
    if verdict not in _DEFAULTS:
        raise InvalidInput("default_decision", f"must be one of {_listed(_DEFAULTS)}, "
                                               f"got {verdict.value!r}")
    return Bundle(rules=(), default_decision=verdict,
                  default_reason=f"no policy is active for this tenant (default: {verdict})")


def parse_bundle(source: str | bytes, *, media_type: str | None = None) -> Bundle:
    """Decode and validate a bundle; media_type None means JSON if it starts with '{'."""
    return parse_bundle_doc(decode(source, media_type, limit=MAX_BUNDLE_BYTES,
                                   what="the policy bundle"))


def parse_bundle_doc(doc: Any) -> Bundle:
    """Validate an already-decoded bundle; raises InvalidDefinition with every problem."""
    if not isinstance(doc, Mapping):
        raise InvalidDefinition([Problem("", "a policy bundle must be a mapping, "
                                             f"got {describe(doc)}")])
    problems: list[Problem] = []
    check_values(doc, "", max_depth=MAX_DEPTH, problems=problems)
    top = FieldReader(doc, "", problems)
    top.check_known(_TOP_FIELDS, "a policy bundle")
    name = top.text("name", max_len=200)
    description = top.text("description", max_len=4096)
    default = _default_decision(top)
    default_reason = top.text("default_reason", max_len=MAX_REASON_LEN)
    rules = _rules(top)
    if problems or default is None:
        raise InvalidDefinition(problems)
    return Bundle(rules=rules, default_decision=default,
                  default_reason=default_reason or f"no rule matched (default: {default})",
                  name=name, description=description)


def _listed(verdicts: tuple[Verdict, ...]) -> str:
    return ", ".join(v.value for v in verdicts)


def _verdict(reader: FieldReader, key: str, allowed: tuple[Verdict, ...]) -> Verdict | None:
    raw = reader.get(key)
    if raw is None:
        reader.problem(key, f"missing required field {key!r} (one of: {_listed(allowed)})")
        return None
    if isinstance(raw, str) and raw in allowed:
        return Verdict(raw)
    shown = repr(raw) if isinstance(raw, str) else describe(raw)
    reader.problem(key, f"unknown decision {shown} (allowed: {_listed(allowed)})")
    return None


def _default_decision(top: FieldReader) -> Verdict | None:
    if top.get("default_decision") == Verdict.ALLOW_WITH_CONSTRAINTS.value:
        top.problem("default_decision", "allow_with_constraints cannot be the default: "
                                        "constraints belong to a rule; use one of "
                                        f"{_listed(_DEFAULTS)}")
        return None
    return _verdict(top, "default_decision", _DEFAULTS)


def _rules(top: FieldReader) -> tuple[Rule, ...]:
    raw = top.get("rules")
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        top.problem("rules", f"must be a list of rules, got {describe(raw)}")
        return ()
    if len(raw) > MAX_RULES:
        top.problem("rules", f"{len(raw)} rules; the limit is {MAX_RULES}")
        return ()
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for index, body in enumerate(raw):
        path = child_path("rules", index)
        if not isinstance(body, Mapping):
            top.problems.append(Problem(path, f"a rule must be a mapping, got {describe(body)}"))
            continue
        reader = FieldReader(body, path, top.problems)
        reader.check_known(_RULE_FIELDS, "a rule")
        name = reader.text("name", required=True, max_len=64, pattern=_NAME, rule=_NAME_RULE)
        if name is not None and name in seen:
            reader.problem("name", f"duplicate rule name {name!r} "
                                   f"(also {child_path('rules', seen[name])})")
        elif name is not None:
            seen[name] = index
        match = read_match(reader)
        verdict = _verdict(reader, "decision", tuple(Verdict))
        reason = reader.text("reason", required=True, max_len=MAX_REASON_LEN)
        constraints = _constraints(reader, verdict)
        if name is not None and verdict is not None and reason is not None:
            rules.append(Rule(name, match, verdict, reason, constraints))
    return tuple(rules)


def _constraints(rule: FieldReader, verdict: Verdict | None) -> Mapping[str, Any]:
    raw = rule.mapping("constraints")
    if raw is None and rule.get("constraints") is not None:
        return MappingProxyType({})  # not a mapping: already reported
    raw = raw or {}
    if verdict is Verdict.ALLOW_WITH_CONSTRAINTS and not raw:
        rule.problem("constraints", "allow_with_constraints needs at least one constraint "
                                    "(e.g. timeout_ms: 60000); use allow for none")
        return MappingProxyType({})
    if verdict is not None and verdict not in _CONSTRAINED and raw:
        rule.problem("constraints", f"constraints are only allowed with {_listed(_CONSTRAINED)}, "
                                    f"not with {verdict.value}")
        return MappingProxyType({})
    reader = FieldReader(raw, rule.path("constraints"), rule.problems)
    for key, (hi, applies) in _ENFORCED.items():
        if key in raw and raw[key] is None:
            # FieldReader reads null as absent, but the engine would receive the key.
            reader.problem(key, "must be an integer, got null")
        elif reader.integer(key, lo=1, hi=hi) is not None and verdict not in (None, *applies):
            reader.problem(key, f"{key!r} only applies to {_listed(applies)}")
    _flow_limits(reader, raw, verdict)
    # Free-form values were checked to be JSON by check_values; keep a private copy.
    return MappingProxyType(copy.deepcopy(dict(raw)))


def _flow_limits(reader: FieldReader, raw: Mapping[Any, Any], verdict: Verdict | None) -> None:
    """max_concurrency and rate_limit (docs/policy.md#limits), enforced at claim: checked
    here so a bad one is refused with the bundle, never met at dispatch."""
    for key in ("max_concurrency", "rate_limit"):
        if key in raw and verdict not in (None, Verdict.ALLOW_WITH_CONSTRAINTS):
            reader.problem(key, f"{key!r} only applies to allow_with_constraints")
    concurrency = raw.get("max_concurrency")
    if "max_concurrency" in raw and not isinstance(concurrency, Mapping):
        if reader.integer("max_concurrency", lo=1, hi=1_000_000) is None \
                and concurrency is None:
            reader.problem("max_concurrency", "must be an integer >= 1 or {key, limit}, "
                                              "got null")
    elif isinstance(concurrency, Mapping):
        limit = FieldReader(concurrency, reader.path("max_concurrency"), reader.problems)
        limit.check_known(("key", "limit"), "max_concurrency")
        limit.text("key", max_len=200)
        if limit.integer("limit", lo=1, hi=1_000_000) is None and limit.get("limit") is None:
            limit.problem("limit", "missing required field 'limit' (an integer >= 1)")
    if "rate_limit" in raw:
        rate = reader.nested("rate_limit", "rate_limit", ("key", "limit", "per_ms"))
        if rate is None:
            if raw.get("rate_limit") is None:
                reader.problem("rate_limit", "must be {limit, per_ms, key}, got null")
            return
        rate.text("key", max_len=200)
        for name, hi in (("limit", 1_000_000), ("per_ms", 31 * 24 * 3600 * 1000)):
            if rate.integer(name, lo=1, hi=hi) is None and rate.get(name) is None:
                rate.problem(name, f"missing required field {name!r} (an integer >= 1)")
