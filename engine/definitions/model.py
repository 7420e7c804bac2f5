"""Workflow definitions (docs/workflows.md): parsing, validation and the canonical stored form.

Validation collects every problem and raises one InvalidDefinition listing them, each
located by a dotted path such as ``steps.apply_patch.depends_on[0]``. An explicit null
is the same as an absent field, which lets ``from_doc`` read the canonical document.
Pure Python, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from engine.core.enums import StepType, Trigger
from engine.core.errors import InvalidDefinition, InvalidInput, NotFound, Problem
from engine.definitions import flowfields, stepgraph
from engine.definitions.docdecode import child_path, decode
from engine.definitions.docfields import FieldReader, check_values, describe
from engine.definitions.eventstarts import EventStart, read_on_event
from engine.definitions.flow import (
    ConcurrencyLimit,
    RateLimit,
    Schedule,
    concurrency_doc,
    rate_limit_doc,
    read_concurrency,
    read_rate_limit,
    read_schedules,
)
from engine.definitions.templates import Reference, parse_references

MAX_DEFINITION_BYTES = 256 * 1024
MAX_STEPS = 200
MAX_DEPTH = 16
MAX_DURATION_MS = 366 * 24 * 3600 * 1000
# for_each (docs/workflows.md#for_each): the most items one step may have (a longer list
# fails the step at dispatch, when the list is known), and max_parallel's default
MAX_FOR_EACH_ITEMS = 5000
DEFAULT_MAX_PARALLEL = 10

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ID_RULE = "a valid id (letters, digits, '.', '_', '-'; starting with a letter or digit; " \
           "at most 64 characters)"
_TOPIC = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_TOPIC_RULE = "a valid topic (letters, digits, '.', '_', ':', '-'; starting with a letter " \
              "or digit; at most 128 characters)"
_IDENT = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_NUM = r"(0|[1-9][0-9]*)"
_SEMVER = re.compile(rf"{_NUM}\.{_NUM}\.{_NUM}(?:-({_IDENT}(?:\.{_IDENT})*))?")
_SEMVER_RULE = "a semantic version MAJOR.MINOR.PATCH with an optional -prerelease " \
               "(e.g. 1.0.0 or 2.1.0-rc.1)"

_TOP_FIELDS = ("id", "name", "version", "timeout_ms", "steps", "output",
               "schedules",  # schedules: flow control (engine.definitions.flow)
               "on_event")  # engine.definitions.eventstarts
_STEP_FIELDS = ("type", "topic", "depends_on", "input", "retries", "timeout_ms", "priority",
                "meta", "expires_in_ms", "message", "webhook", *flowfields.STEP_FIELDS,
                "for_each", "max_parallel", "workflow", "version",
                "concurrency", "rate_limit")  # the last two: engine.definitions.flow
_RETRY_FIELDS = ("max_attempts", "backoff_ms", "max_backoff_ms", "multiplier", "jitter")
_META_FIELDS = ("risk_tags", "capability", "labels")
_ONLY_FOR = {"topic": StepType.JOB, "input": StepType.JOB, "timeout_ms": StepType.JOB,
             "expires_in_ms": StepType.APPROVAL, "message": StepType.NOTIFY,
             "webhook": StepType.NOTIFY, "concurrency": StepType.JOB,
             "rate_limit": StepType.JOB}
# fields of _ONLY_FOR that another type reads too
_ALSO_FOR = {"input": (StepType.WORKFLOW,)}
_FOR_EACH_TYPES = (StepType.JOB, StepType.WORKFLOW)
_TYPES = ", ".join(t.value for t in StepType)
_DEFAULT_PRIORITY = 5


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 1
    """Total attempts, 1..100."""
    backoff_ms: int = 1000
    """Delay before the second attempt."""
    max_backoff_ms: int = 300_000
    """Cap on the growing delay; at least ``backoff_ms``."""
    multiplier: float = 2.0
    """Growth of the delay per attempt, >= 1."""
    jitter: float = 0.1
    """Fraction 0..1 of the delay, randomised +/-."""


@dataclass(frozen=True)
class StepMeta:
    """Facts about a step that policies decide on."""

    risk_tags: tuple[str, ...] = ()
    capability: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StepDef:
    id: str
    type: StepType
    topic: str | None
    depends_on: tuple[str, ...]
    input: Mapping[str, Any] | None
    retries: RetryPolicy
    timeout_ms: int | None
    priority: int
    meta: StepMeta
    expires_in_ms: int | None
    message: str | None
    webhook: str | None
    # control flow (engine/definitions/flowfields.py, docs/workflows.md#control-flow)
    when: str | None = None
    trigger: Trigger = Trigger.ALL_SUCCEEDED
    duration_ms: int | None = None
    until: str | None = None
    event: str | None = None
    key: str | None = None
    for_each: str | None = None
    """``${input.<path>}`` or ``${steps.<id>.output.<path>}``: one item per element."""
    max_parallel: int | None = None
    """With for_each: the most items in flight at once."""
    workflow: str | None = None
    """A workflow step: the child workflow's id."""
    workflow_version: str | None = None
    """A workflow step: the child's version (None: the newest when the run starts)."""
    # flow control (docs/workflows.md#concurrency-and-rate-limits), job steps only
    concurrency: ConcurrencyLimit | None = None
    rate_limit: RateLimit | None = None


@dataclass(frozen=True)
class WorkflowDef:
    id: str
    name: str
    version: str
    steps: Mapping[str, StepDef]
    """In topological order, ties broken by definition order."""
    timeout_ms: int | None
    output: Mapping[str, Any] | None = None
    """Templates over the steps' outputs; None: the sink steps' outputs by step id."""
    schedules: tuple[Schedule, ...] = ()  # docs/workflows.md#schedules
    on_event: tuple[EventStart, ...] = ()  # docs/workflows.md#event-started-runs

    def to_doc(self) -> dict[str, Any]:
        """The canonical JSON-able document, every default filled in.

        ``steps`` is written in topological order. A store that does not keep key order
        (jsonb) still round-trips to an equal WorkflowDef, but ties may then be broken
        in the store's key order instead of the original definition order.
        """
        doc: dict[str, Any] = {
            "id": self.id, "name": self.name, "version": self.version,
            "timeout_ms": self.timeout_ms,
            "steps": {sid: _step_doc(step) for sid, step in self.steps.items()}}
        if self.output is not None:  # absent, so documents stored before keep their form
            doc["output"] = _thaw(self.output, 1)
        if self.schedules:  # only when set: documents stored before keep their form
            doc["schedules"] = [schedule.to_doc() for schedule in self.schedules]
        if self.on_event:  # only when set: documents stored before keep their form
            doc["on_event"] = [start.to_doc() for start in self.on_event]
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> WorkflowDef:
        """The inverse of ``to_doc``; the document is validated again."""
        return parse_workflow_doc(doc)

    def ancestors(self, step_id: str) -> frozenset[str]:
        """Every step ``step_id`` depends on, directly or transitively."""
        return frozenset(stepgraph.reachable(self._graph(step_id), step_id))

    def descendants(self, step_id: str) -> frozenset[str]:
        """Every step that depends on ``step_id``, directly or transitively."""
        return frozenset(stepgraph.reachable(stepgraph.reverse(self._graph(step_id)), step_id))

    def _graph(self, step_id: str) -> dict[str, tuple[str, ...]]:
        if step_id not in self.steps:
            raise NotFound(f"workflow {self.id!r} version {self.version} has no step {step_id!r}")
        return {sid: step.depends_on for sid, step in self.steps.items()}


VersionKey = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


def version_key(version: str) -> VersionKey:
    """A sort key in semver precedence: a prerelease sorts before its release."""
    match = _SEMVER.fullmatch(version)
    if match is None:
        raise InvalidInput("version", f"{version!r} is not {_SEMVER_RULE}")
    major, minor, patch, pre = match.groups()
    if pre is None:
        return int(major), int(minor), int(patch), 1, ()
    # Numeric identifiers compare numerically and before alphanumeric ones (semver §11).
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return int(major), int(minor), int(patch), 0, parts


def parse_workflow(source: str | bytes, *, media_type: str | None = None) -> WorkflowDef:
    """Decode and validate a definition; media_type None means JSON if it starts with '{'."""
    return parse_workflow_doc(decode(source, media_type, limit=MAX_DEFINITION_BYTES,
                                     what="the definition"))


def parse_workflow_doc(doc: Any) -> WorkflowDef:
    """Validate an already-decoded document."""
    if not isinstance(doc, Mapping):
        raise InvalidDefinition([Problem("", "a workflow definition must be a mapping, "
                                             f"got {describe(doc)}")])
    problems: list[Problem] = []
    check_values(doc, "", max_depth=MAX_DEPTH, problems=problems)
    top = FieldReader(doc, "", problems)
    top.check_known(_TOP_FIELDS, "a workflow")
    workflow_id = top.text("id", required=True, pattern=_ID, rule=_ID_RULE)
    name = top.text("name", required=True, max_len=200)
    version = top.text("version", required=True, max_len=64, pattern=_SEMVER, rule=_SEMVER_RULE)
    timeout_ms = top.integer("timeout_ms", lo=1, hi=MAX_DURATION_MS)
    steps = _Steps(top)
    order = steps.check_graph()
    output = _output(top, steps)
    schedules = read_schedules(top)
    on_event = read_on_event(top)
    if problems or workflow_id is None or name is None or version is None:
        raise InvalidDefinition(problems)
    return WorkflowDef(id=workflow_id, name=name, version=version, timeout_ms=timeout_ms,
                       steps=MappingProxyType({sid: steps.defs[sid] for sid in order}),
                       output=output, schedules=schedules, on_event=on_event)


def _output(top: FieldReader, steps: _Steps) -> Mapping[str, Any] | None:
    """The workflow's ``output:`` mapping: templates over any of its steps (the run's
    output is rendered once every step is final)."""
    raw = top.mapping("output")
    if raw is None:
        return None
    found: list[tuple[str, str, Reference]] = []
    scanner = _Steps.__new__(_Steps)
    scanner.problems, scanner.refs = top.problems, found
    scanner._scan("", raw, "output", 1)
    for _, path, ref in found:
        if ref.root:
            top.problems.append(Problem(path, f"{ref.text}: ${{{ref.root}}} is only set in "
                                              "the input of a for_each step"))
        elif ref.step is not None and ref.step not in steps.graph:
            top.problems.append(Problem(path, f"{ref.text} refers to unknown step "
                                              f"{ref.step!r}"))
    return MappingProxyType(_thaw(raw, 1))


class _Steps:
    """Reads the ``steps`` mapping, then checks the graph the steps form."""

    def __init__(self, top: FieldReader) -> None:
        self.problems = top.problems
        self.defs: dict[str, StepDef] = {}
        self.graph: dict[str, tuple[str, ...]] = {}
        self.refs: list[tuple[str, str, Reference]] = []  # (step, path, reference)
        self.conditions: list[flowfields.Condition] = []
        self.known: frozenset[str] = frozenset()
        raw = top.mapping("steps", required=True)
        if raw is None:
            return
        if not raw:
            top.problem("steps", "a workflow needs at least one step")
        elif len(raw) > MAX_STEPS:
            top.problem("steps", f"{len(raw)} steps; the limit is {MAX_STEPS}")
            return
        self.known = frozenset(key for key in raw if isinstance(key, str))
        for sid, body in raw.items():
            if isinstance(sid, str):  # other keys were reported by check_values
                self._read(sid, body)

    def _read(self, sid: str, body: Any) -> None:
        path = child_path("steps", sid)
        if not _ID.fullmatch(sid):
            self.problems.append(Problem(path, f"{sid!r} is not {_ID_RULE}"))
        if not isinstance(body, Mapping):
            self.problems.append(Problem(path, f"a step must be a mapping, got {describe(body)}"))
            return
        fields = FieldReader(body, path, self.problems)
        fields.check_known(_STEP_FIELDS, "a step")
        self.graph[sid] = self._depends_on(sid, fields)
        step_type = _step_type(fields)
        read = {key: _applies(fields, key, step_type) for key in _ONLY_FOR}
        topic = fields.text("topic", max_len=128, pattern=_TOPIC, rule=_TOPIC_RULE) \
            if read["topic"] else None
        if step_type is StepType.JOB and fields.get("topic") is None:
            fields.problem("topic", "missing required field 'topic' (a job step names the "
                                    "topic its workers claim from)")
        step_input = self._input(sid, fields) if read["input"] else None
        retries = _retries(fields)
        timeout_ms = fields.integer("timeout_ms", lo=1, hi=MAX_DURATION_MS) \
            if read["timeout_ms"] or step_type is StepType.WAIT_EVENT else None
        priority = fields.integer("priority", lo=0, hi=9)
        meta = _meta(fields)
        expires_in_ms = fields.integer("expires_in_ms", lo=1, hi=MAX_DURATION_MS) \
            if read["expires_in_ms"] else None
        message = fields.text("message", max_len=4096) if read["message"] else None
        webhook = _webhook(fields) if read["webhook"] else None
        flow = flowfields.read(sid, fields, step_type, self.refs, self.conditions)
        for_each, max_parallel = self._for_each(sid, fields, step_type)
        workflow, workflow_version = _child(fields, step_type)
        # flow control: the keys' ${...} references are checked like the input's
        key_refs: list[Reference] = []
        concurrency = read_concurrency(fields, key_refs) if read["concurrency"] else None
        rate_limit = read_rate_limit(fields, key_refs) if read["rate_limit"] else None
        self.refs.extend((sid, fields.path("concurrency"), ref) for ref in key_refs)
        if step_type is not None:
            self.defs[sid] = StepDef(
                id=sid, type=step_type, topic=topic, depends_on=self.graph[sid],
                input=step_input, retries=retries, timeout_ms=timeout_ms,
                priority=_DEFAULT_PRIORITY if priority is None else priority, meta=meta,
                expires_in_ms=expires_in_ms, message=message, webhook=webhook, **flow,
                for_each=for_each, max_parallel=max_parallel, workflow=workflow,
                workflow_version=workflow_version, concurrency=concurrency,
                rate_limit=rate_limit)

    def _for_each(self, sid: str, fields: FieldReader,
                  step_type: StepType | None) -> tuple[str | None, int | None]:
        """for_each and max_parallel; ${item} in the input only where for_each is set."""
        raw = fields.get("for_each")
        if raw is None:
            if fields.get("max_parallel") is not None:
                fields.problem("max_parallel", "'max_parallel' is only allowed with 'for_each'")
            for ref_sid, path, ref in self.refs:
                if ref_sid == sid and ref.root:
                    self.problems.append(Problem(path, f"{ref.text}: ${{{ref.root}}} is only "
                                                       "set in a step with 'for_each'"))
            return None, None
        if step_type is not None and step_type not in _FOR_EACH_TYPES:
            fields.problem("for_each", "'for_each' is only allowed on job and workflow steps; "
                                       f"this is a step of type {step_type.value!r}")
            return None, None
        rule = ("must be one reference to a list: \"${input.<path>}\" or "
                "\"${steps.<id>.output.<path>}\"")
        if not isinstance(raw, str):
            fields.problem("for_each", f"{rule}, got {describe(raw)}")
            return None, None
        try:
            found = parse_references(raw)
        except InvalidInput as exc:
            fields.problem("for_each", str(exc))
            return None, None
        if len(found) != 1 or found[0].text != raw or found[0].root:
            fields.problem("for_each", f"{rule}, got {raw!r}")
            return None, None
        self.refs.append((sid, fields.path("for_each"), found[0]))
        max_parallel = fields.integer("max_parallel", lo=1, hi=MAX_FOR_EACH_ITEMS)
        return raw, DEFAULT_MAX_PARALLEL if max_parallel is None else max_parallel

    def _depends_on(self, sid: str, fields: FieldReader) -> tuple[str, ...]:
        raw = fields.get("depends_on")
        if raw is None:
            return ()
        if not isinstance(raw, list | tuple):
            fields.problem("depends_on", f"must be a list of step ids, got {describe(raw)}")
            return ()
        deps: list[str] = []
        for index, dep in enumerate(raw):
            where = child_path(fields.path("depends_on"), index)
            if not isinstance(dep, str):
                self.problems.append(Problem(where, f"must be a step id, got {describe(dep)}"))
            elif dep == sid:
                self.problems.append(Problem(where, f"step {sid!r} depends on itself"))
            elif dep in deps:
                self.problems.append(Problem(where, f"duplicate dependency {dep!r}"))
            elif dep not in self.known:
                self.problems.append(Problem(where, f"depends on unknown step {dep!r}"))
            else:
                deps.append(dep)
        return tuple(deps)

    def _input(self, sid: str, fields: FieldReader) -> Mapping[str, Any] | None:
        raw = fields.mapping("input")
        if raw is None:
            return None
        self._scan(sid, raw, fields.path("input"), 1)
        return MappingProxyType(_thaw(raw, 1))

    def _scan(self, sid: str, value: Any, path: str, level: int) -> None:
        if level > MAX_DEPTH:  # already reported by check_values
            return
        if isinstance(value, str):
            try:
                found = parse_references(value)
            except InvalidInput as exc:
                self.problems.append(Problem(path, str(exc)))
                return
            self.refs.extend((sid, path, ref) for ref in found)
        elif isinstance(value, Mapping):
            for key, child in value.items():
                self._scan(sid, child, child_path(path, key), level + 1)
        elif isinstance(value, list | tuple):
            for index, child in enumerate(value):
                self._scan(sid, child, child_path(path, index), level + 1)

    def check_graph(self) -> list[str]:
        """Report cycles and references to non-ancestors; the topological order if none."""
        cycles = stepgraph.find_cycles(self.graph)
        for cycle in cycles:
            self.problems.append(Problem(child_path(child_path("steps", cycle[0]), "depends_on"),
                                         "cycle: " + " -> ".join(cycle)
                                         + " (each step depends on the next)"))
        for sid, path, ref in self.refs:
            if ref.step is None:
                continue
            if ref.step not in self.graph:
                message = f"refers to unknown step {ref.step!r}"
            elif ref.step == sid:
                message = f"refers to step {sid!r} itself"
            elif ref.step not in stepgraph.reachable(self.graph, sid):
                message = f"refers to step {ref.step!r}, which is not an ancestor of {sid!r}"
            else:
                continue
            self.problems.append(Problem(path, f"{ref.text} {message}"))
        flowfields.check_conditions(self.conditions, self.graph, self.problems)
        return [] if cycles else stepgraph.topological_order(self.graph)


def _step_type(fields: FieldReader) -> StepType | None:
    raw = fields.get("type")
    if raw is None:
        fields.problem("type", f"missing required field 'type' (one of: {_TYPES})")
        return None
    if isinstance(raw, str):
        try:
            return StepType(raw)
        except ValueError:
            pass
    shown = repr(raw) if isinstance(raw, str) else describe(raw)
    fields.problem("type", f"unknown step type {shown} (allowed: {_TYPES})")
    return None


def _child(fields: FieldReader, step_type: StepType | None) -> tuple[str | None, str | None]:
    """A workflow step's child: ``workflow`` (required) and ``version`` (optional)."""
    if step_type is not StepType.WORKFLOW:
        for key in ("workflow", "version"):
            if step_type is not None and fields.get(key) is not None:
                fields.problem(key, f"{key!r} is only allowed on workflow steps; this is a "
                                    f"step of type {step_type.value!r}")
        return None, None
    if fields.get("workflow") is None:
        fields.problem("workflow", "missing required field 'workflow' (a workflow step names "
                                   "the workflow its child run starts)")
    workflow = fields.text("workflow", pattern=_ID, rule=_ID_RULE)
    version = fields.text("version", max_len=64, pattern=_SEMVER, rule=_SEMVER_RULE)
    return workflow, version


def _applies(fields: FieldReader, key: str, step_type: StepType | None) -> bool:
    """Whether a type-specific field is read; on the wrong type it is reported instead."""
    if step_type is None or _ONLY_FOR[key] is step_type \
            or step_type in _ALSO_FOR.get(key, ()):
        return True
    if step_type in flowfields.ALSO_FOR.get(key, ()):
        return False  # read by flowfields
    if fields.get(key) is not None:
        fields.problem(key, f"{key!r} is only allowed on {_ONLY_FOR[key].value} steps; "
                            f"this is a step of type {step_type.value!r}")
    return False


def _retries(fields: FieldReader) -> RetryPolicy:
    reader = fields.nested("retries", "retries", _RETRY_FIELDS)
    if reader is None:
        return RetryPolicy()
    default = RetryPolicy()
    max_attempts = reader.integer("max_attempts", lo=1, hi=100)
    backoff_ms = reader.integer("backoff_ms", lo=0, hi=MAX_DURATION_MS)
    max_backoff_ms = reader.integer("max_backoff_ms", lo=0, hi=MAX_DURATION_MS)
    backoff = default.backoff_ms if backoff_ms is None else backoff_ms
    if max_backoff_ms is None:
        # Raising only backoff_ms must not trip over the default cap.
        cap = max(default.max_backoff_ms, backoff)
    elif max_backoff_ms < backoff:
        reader.problem("max_backoff_ms", f"must be >= backoff_ms ({backoff}), "
                                         f"got {max_backoff_ms}")
        cap = backoff
    else:
        cap = max_backoff_ms
    multiplier = reader.number("multiplier", lo=1.0, hi=100.0)
    jitter = reader.number("jitter", lo=0.0, hi=1.0)
    return RetryPolicy(
        max_attempts=default.max_attempts if max_attempts is None else max_attempts,
        backoff_ms=backoff, max_backoff_ms=cap,
        multiplier=default.multiplier if multiplier is None else multiplier,
        jitter=default.jitter if jitter is None else jitter)


def _meta(fields: FieldReader) -> StepMeta:
    reader = fields.nested("meta", "meta", _META_FIELDS)
    if reader is None:
        return StepMeta()
    labels: dict[str, str] = {}
    raw_labels = reader.mapping("labels")
    for key, value in (raw_labels or {}).items():
        where = child_path(reader.path("labels"), key)
        if not isinstance(key, str):
            continue  # reported by check_values
        if not key or len(key) > 128:
            reader.problems.append(Problem(where, "label names must be 1 to 128 characters"))
        elif not isinstance(value, str) or len(value) > 1024:
            reader.problems.append(Problem(where, "must be a string of at most 1024 "
                                                  f"characters, got {describe(value)}"))
        else:
            labels[key] = value
    return StepMeta(risk_tags=reader.strings("risk_tags", max_len=128),
                    capability=reader.text("capability", max_len=128),
                    labels=MappingProxyType(labels))


def _webhook(fields: FieldReader) -> str | None:
    url = fields.text("webhook", max_len=2048)
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        valid = False
    if not valid or any(ch.isspace() or ord(ch) < 32 for ch in url):
        fields.problem("webhook", f"must be an http(s) URL, got {describe(url)}")
        return None
    return url


def plain(value: Any) -> Any:
    """A plain, private copy (dicts and lists) of a definition's read-only JSON value."""
    return _thaw(value, 1)


def _thaw(value: Any, level: int) -> Any:
    """A plain, private copy (dicts and lists) of a JSON-like value."""
    if level > MAX_DEPTH:  # too deep: already reported, and the result is discarded
        return value
    if isinstance(value, Mapping):
        return {key: _thaw(child, level + 1) for key, child in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(child, level + 1) for child in value]
    return value


def _step_doc(step: StepDef) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": step.type.value, "depends_on": list(step.depends_on)}
    if step.type is StepType.JOB:
        doc["topic"] = step.topic
        doc["input"] = None if step.input is None else _thaw(step.input, 1)
        doc["timeout_ms"] = step.timeout_ms
    elif step.type is StepType.APPROVAL:
        doc["expires_in_ms"] = step.expires_in_ms
    elif step.type is StepType.NOTIFY:
        doc["message"] = step.message
        doc["webhook"] = step.webhook
    elif step.type is StepType.WORKFLOW:
        doc["workflow"] = step.workflow
        doc["version"] = step.workflow_version
        doc["input"] = None if step.input is None else _thaw(step.input, 1)
    if step.for_each is not None:  # absent otherwise, so stored documents keep their form
        doc["for_each"] = step.for_each
        doc["max_parallel"] = step.max_parallel
    doc.update(flowfields.to_doc(step))
    r = step.retries
    doc["retries"] = {"max_attempts": r.max_attempts, "backoff_ms": r.backoff_ms,
                      "max_backoff_ms": r.max_backoff_ms, "multiplier": r.multiplier,
                      "jitter": r.jitter}
    doc["priority"] = step.priority
    doc["meta"] = {"risk_tags": list(step.meta.risk_tags), "capability": step.meta.capability,
                   "labels": dict(step.meta.labels)}
    # flow control, only when set: documents stored before keep their form
    if step.concurrency is not None:
        doc["concurrency"] = concurrency_doc(step.concurrency)
    if step.rate_limit is not None:
        doc["rate_limit"] = rate_limit_doc(step.rate_limit)
    return doc
