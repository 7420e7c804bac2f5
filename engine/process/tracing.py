"""Traces: each run is one OpenTelemetry trace (docs/deployment.md#traces).

Off unless configured (``Settings.traces``). Off, or without the ``pgwarden[otel]``
extra, nothing of OpenTelemetry is imported: every call below first checks one module
global and returns, so the hot paths (a scheduler pass, a worker's job) pay one check.

The ids are derived, not stored or shared: the trace id is a hash of the run id, the run's
span id a hash of the run id, each dispatched attempt's span id a hash of its job id. So
every process that touches a run emits spans of one trace from the rows alone, with no
state passed between processes (beyond ``warden.jobs.traceparent``, which a worker in
any language receives with its claim), and a span emitted twice has the same ids.

The spans, each emitted by the process that knows its times, when it ends::

    run <workflow>           root; created_at → finished_at, by whoever ends the run
    ├─ dispatch <step>       PRODUCER; the scheduler pass that dispatched the attempt;
    │  │                     its span id is the parent id of the job's traceparent
    │  ├─ job <step>         CONSUMER; the Python worker, claim → result recorded; the
    │  │                     handler runs inside it (a SQL worker makes its own)
    │  └─ approval <step>    a policy's approval of this attempt (kind = policy)
    └─ approval <step>       an `approval` step; requested_at → decided_at

Approval waits are emitted with their run's span, when the run ends: the rows hold both
times, and whichever way the wait ended (decided, expired, superseded, the run
cancelled), the process that ends the run sees it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any
from uuid import UUID

from engine.core.enums import ApprovalStatus, RunStatus
from engine.core.errors import ConfigError
from engine.store.records import ApprovalRow, ClaimedJob, EndedRun, RunRow

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.id_generator import IdGenerator
    from opentelemetry.trace import Span, Tracer

SCOPE = "warden"
# run statuses that mark the run's span as an error (denied and cancelled are outcomes
# somebody chose, not failures of the run)
_ERRORS = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT})


@dataclass(frozen=True)
class _On:
    tracer: Tracer
    provider: TracerProvider


_ON: _On | None = None
# the ids the next span this process starts must take (see _DerivedIds)
_FORCED: ContextVar[tuple[int, int] | None] = ContextVar("warden_forced_ids", default=None)


def enabled() -> bool:
    return _ON is not None


# ------------------------------------------------------------------ the derived ids

def _hash64(kind: str, key: str) -> int:
    digest = hashlib.sha256(f"warden:{kind}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


def trace_id(run_id: UUID) -> int:
    """128 uniformly distributed bits (a ratio sampler reads the low 64): not the run id
    itself, whose version and variant bits would bias it."""
    digest = hashlib.sha256(b"warden:trace:" + run_id.bytes).digest()
    return int.from_bytes(digest[:16], "big") or 1


def run_span_id(run_id: UUID) -> int:
    return _hash64("run", str(run_id))


def dispatch_span_id(job_id: str) -> int:
    return _hash64("job", job_id)


def traceparent(run_id: UUID, job_id: str) -> str | None:
    """The W3C traceparent a job is stored with; None when traces are off."""
    if _ON is None:
        return None
    flags = "01" if _sampled(_ON, trace_id(run_id)) else "00"
    return f"00-{trace_id(run_id):032x}-{dispatch_span_id(job_id):016x}-{flags}"


def _sampled(on: _On, trace: int) -> bool:
    """The sampler's decision for the run's root span. Every span of the run is started
    under a parent carrying it, so a run is recorded whole or not at all; with a ratio
    sampler that decision depends on the trace id alone, so every process agrees."""
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace.sampling import Decision

    decision = on.provider.sampler.should_sample(Context(), trace, "run").decision
    return decision is Decision.RECORD_AND_SAMPLE


# ------------------------------------------------------------------ set-up

def configure(trigger: str | None, *, service: str = "warden",
              provider: TracerProvider | None = None) -> bool:
    """Turns traces on when ``trigger`` (the variable that asked for them, see
    `engine.core.settings`) is set, or with an explicit ``provider`` (tests, embedders).
    Uses the tracer provider already installed if it is the SDK's (``opentelemetry-
    instrument``, an application embedding the worker); else builds one from the OTEL_*
    variables and installs it, so spans a handler makes with the OpenTelemetry API are
    exported too. True if traces are on."""
    global _ON
    if trigger is None and provider is None:
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError as exc:
        raise ConfigError(f"{trigger} asks for traces, but OpenTelemetry is not installed: "
                          "pip install 'pgwarden[otel]', or set WARDEN_OTEL=0") from exc
    if provider is None:
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            provider = current
        else:
            provider = _provider_from_env(service)
            trace.set_tracer_provider(provider)
    derived = _derived_ids_class()
    if not isinstance(provider.id_generator, derived):
        # public attribute, read by every tracer the provider hands out afterwards (the
        # SDK's annotation names only its default class)
        provider.id_generator = derived(provider.id_generator)  # type: ignore[assignment]
    _ON = _On(provider.get_tracer(SCOPE), provider)
    return True


def shutdown() -> None:
    """Turns traces off again (tests); spans already ended stay with their exporter."""
    global _ON
    _ON = None


def _provider_from_env(service: str) -> TracerProvider:
    """A provider as the SDK's own auto-configuration makes one: OTEL_SERVICE_NAME and
    OTEL_RESOURCE_ATTRIBUTES for the resource, OTEL_TRACES_SAMPLER(_ARG) for the sampler,
    OTEL_TRACES_EXPORTER (default otlp) for the exporters, OTEL_EXPORTER_OTLP_* and
    OTEL_BSP_* read by the exporter and the batch processor themselves."""
    import os
    from importlib.metadata import entry_points

    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    provider = TracerProvider(resource=resource)
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    for name in names:
        if not name or name == "none":
            continue
        # `otlp` is registered by the opentelemetry-exporter-otlp bundle; the extra
        # installs only its HTTP half, registered as otlp_proto_http
        candidates = ("otlp", "otlp_proto_http") if name == "otlp" else (name,)
        found = [ep for candidate in candidates
                 for ep in entry_points(group="opentelemetry_traces_exporter", name=candidate)]
        if not found:
            raise ConfigError(f"OTEL_TRACES_EXPORTER: no exporter named {name!r} is installed")
        provider.add_span_processor(BatchSpanProcessor(found[0].load()()))
    return provider


class _Derived:
    """What the id generator _derived_ids_class makes is constructed with."""

    def __init__(self, inner: IdGenerator) -> None:
        self.inner = inner


@cache
def _derived_ids_class() -> type[_Derived]:
    """Defined on first use: its base class is the SDK's, imported only with traces on."""
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    class DerivedIds(IdGenerator, _Derived):
        """The provider's id generator, except for the spans this module starts with ids
        derived from the run (in _FORCED for the length of one start_span call)."""

        def generate_span_id(self) -> int:
            forced = _FORCED.get()
            return forced[1] if forced else self.inner.generate_span_id()

        def generate_trace_id(self) -> int:
            forced = _FORCED.get()
            return forced[0] if forced else self.inner.generate_trace_id()

        def is_trace_id_random(self) -> bool:
            return self.inner.is_trace_id_random()

    return DerivedIds


# ------------------------------------------------------------------ spans from rows

def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000_000)


def _parent(on: _On, trace: int, span_id: int) -> Context:
    from opentelemetry import trace as api

    flags = api.TraceFlags(api.TraceFlags.SAMPLED if _sampled(on, trace) else 0)
    parent = api.SpanContext(trace, span_id, is_remote=True, trace_flags=flags)
    return api.set_span_in_context(api.NonRecordingSpan(parent))


def _emit(on: _On, name: str, *, ids: tuple[int, int], parent: int | None, kind: str,
          start: datetime, end: datetime, attributes: Mapping[str, Any],
          error: str | None = None) -> None:
    from opentelemetry import trace as api
    from opentelemetry.context import Context

    context = _parent(on, ids[0], parent) if parent is not None else Context()
    token = _FORCED.set(ids)
    try:
        span = on.tracer.start_span(name, context=context, kind=api.SpanKind[kind],
                                    attributes=dict(attributes), start_time=_ns(start))
    finally:
        _FORCED.reset(token)
    if error is not None:
        span.set_status(api.Status(api.StatusCode.ERROR, error))
    span.end(end_time=_ns(max(start, end)))


@dataclass(frozen=True)
class Dispatched:
    """An attempt a scheduler pass dispatched (pending, blocked for approval, or denied)."""

    run: RunRow
    job_id: str
    step_id: str
    attempt: int
    topic: str
    verdict: str


def dispatched(jobs: Iterable[Dispatched], start: datetime, end: datetime) -> None:
    """The dispatch spans of a committed scheduler pass (its start and its commit)."""
    if _ON is None:
        return
    for job in jobs:
        trace = trace_id(job.run.run_id)
        _emit(_ON, f"dispatch {job.step_id}", ids=(trace, dispatch_span_id(job.job_id)),
              parent=run_span_id(job.run.run_id), kind="PRODUCER", start=start, end=end,
              attributes={**_run_attributes(job.run), "warden.step_id": job.step_id,
                          "warden.job_id": job.job_id, "warden.attempt": job.attempt,
                          "warden.topic": job.topic, "warden.policy.verdict": job.verdict},
              error="denied by policy" if job.verdict == "deny" else None)


def run_ended(run: RunRow | EndedRun, approvals: Iterable[ApprovalRow]) -> None:
    """The span of a run that has just ended (committed), and of its approval waits."""
    if _ON is None or run.finished_at is None:
        return
    trace = trace_id(run.run_id)
    root = run_span_id(run.run_id)
    _emit(_ON, f"run {run.workflow_id}", ids=(trace, root), parent=None, kind="INTERNAL",
          start=run.created_at, end=run.finished_at,
          attributes={**_run_attributes(run), "warden.run.status": run.status.value,
                      "warden.workflow.version": run.workflow_version,
                      "warden.created_by": run.created_by},
          error=f"run {run.status.value}" if run.status in _ERRORS else None)
    for approval in approvals:
        end = approval.decided_at or run.finished_at
        _emit(_ON, f"approval {approval.step_id}",
              ids=(trace, _hash64("approval", str(approval.approval_id))),
              parent=dispatch_span_id(approval.job_id) if approval.job_id else root,
              kind="INTERNAL", start=approval.requested_at, end=end,
              attributes={**_run_attributes(run), "warden.step_id": approval.step_id,
                          "warden.approval_id": str(approval.approval_id),
                          "warden.approval.kind": approval.kind,
                          "warden.approval.status": approval.status.value,
                          **({"warden.approval.decided_by": approval.decided_by}
                             if approval.decided_by else {})},
              error="rejected" if approval.status is ApprovalStatus.REJECTED else None)


def _run_attributes(run: RunRow | EndedRun) -> dict[str, Any]:
    return {"warden.run_id": str(run.run_id), "warden.tenant_id": run.tenant_id,
            "warden.workflow.id": run.workflow_id}


# ------------------------------------------------------------------ the worker's span

class Attempt:
    """The worker's span of one attempt, a context manager; this base class is the no-op
    used while traces are off (no generator, no allocation: one per job)."""

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def failed(self, exc: BaseException, *, retryable: bool) -> None:
        """The handler raised: the attempt failed."""

    def outcome(self, value: str) -> None:
        """How the attempt ended: succeeded, failed, released, or a fence's outcome."""


_OFF = Attempt()


class _Recording(Attempt):
    """Current while its block runs: a handler started in it (its task or thread copies
    the context) makes its own spans as children."""

    def __init__(self, span: Span) -> None:
        self.span = span
        self._token: Token[Context] | None = None

    def __enter__(self) -> Attempt:
        from opentelemetry import context, trace

        self._token = context.attach(trace.set_span_in_context(self.span))
        return self

    def __exit__(self, *exc: object) -> None:
        from opentelemetry import context

        if self._token is not None:
            context.detach(self._token)
        self.span.end()

    def failed(self, exc: BaseException, *, retryable: bool) -> None:
        from opentelemetry.trace import Status, StatusCode

        self.span.record_exception(exc)
        self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        self.span.set_attribute("warden.retryable", retryable)
        self.outcome("failed")

    def outcome(self, value: str) -> None:
        self.span.set_attribute("warden.job.outcome", value)


def job_attempt(row: ClaimedJob, worker: str) -> Attempt:
    """The span of one claimed attempt in the Python worker, to use as ``with``: its
    parent is the job's traceparent, the dispatch span."""
    if _ON is None or row.traceparent is None:
        return _OFF
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract({"traceparent": row.traceparent})
    return _Recording(_ON.tracer.start_span(
        f"job {row.step_id}", context=parent, kind=trace.SpanKind.CONSUMER, attributes={
            "warden.run_id": str(row.run_id), "warden.tenant_id": row.tenant_id,
            "warden.step_id": row.step_id, "warden.job_id": row.job_id,
            "warden.attempt": row.attempt, "warden.topic": row.topic,
            "warden.worker": worker, "warden.waited_s": row.waited_s}))
