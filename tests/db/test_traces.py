"""Traces (docs/deployment.md#traces): a run is one trace, recorded with the SDK's
in-memory exporter while the real scheduler, worker and approvals move it; a SQL worker
gets the traceparent with its claim; with traces off nothing of OpenTelemetry loads."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from engine.core.enums import RunStatus
from engine.core.settings import load
from engine.governance import approvals
from engine.process import tracing
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from engine.worker.runner import Job, Worker, WorkerConfig
from tests import roles as roles_mod
from tests import support
from tests.roles import LoginRoles, as_role

pytestmark = pytest.mark.anyio

FLOW = """
id: traced
name: traced
version: 1.0.0
steps:
  a: {type: job, topic: traced.work}
  gate: {type: approval, depends_on: [a]}
  b: {type: job, topic: traced.work, depends_on: [gate]}
"""

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Traces on, into memory. The provider is also the process's global one (set once:
    OpenTelemetry allows no second), so a handler's own spans land there too."""
    trace.set_tracer_provider(PROVIDER)
    assert tracing.configure(None, provider=PROVIDER)
    EXPORTER.clear()
    try:
        yield EXPORTER
    finally:
        tracing.shutdown()


async def handle(job: Job) -> dict[str, Any]:
    """A handler instrumented with nothing but the OpenTelemetry API."""
    with trace.get_tracer("tests.handler").start_as_current_span(f"handler {job.step_id}"):
        return {"step": job.step_id, "traceparent": job.traceparent}


async def drive(db: Database, scheduler: Scheduler, run_id: UUID, status: str) -> None:
    """Scheduler passes and the observer of ends (as `warden serve` runs them) until the
    run reaches ``status`` (the worker runs meanwhile)."""
    async def reached() -> bool:
        await support.settle(scheduler)
        done = (await support.detail(db, run_id)).run.status.value == status
        await scheduler.observe_ends()  # after the read: an end seen there is observed
        return done

    await support.wait_for(reached, timeout=30, what=f"the run to be {status}")


def by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    named = {span.name: span for span in finished}
    assert len(named) == len(finished), [span.name for span in finished]
    return named


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent else None


async def test_a_run_is_one_trace_of_its_attempts_and_approval(
        db: Database, svc: Services, scheduler: Scheduler,
        spans: InMemorySpanExporter) -> None:
    await support.store(db, FLOW)
    run = await support.start(svc, "traced", {"incident": "INC-7"})
    stop = asyncio.Event()
    worker = Worker(db, handle, WorkerConfig(topics=("traced.work",), poll_interval_s=0.05))
    task = asyncio.create_task(worker.run(stop))
    try:
        await drive(db, scheduler, run.run_id, "waiting")
        [approval] = (await support.detail(db, run.run_id)).approvals
        await approvals.decide(db, tenant_id="default", approval_id=approval.approval_id,
                               approve=True, principal="bob")
        await drive(db, scheduler, run.run_id, "succeeded")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)

    found = by_name(spans.get_finished_spans())
    assert sorted(found) == ["approval gate", "dispatch a", "dispatch b", "handler a",
                             "handler b", "job a", "job b", "run traced"]
    # one trace, whose id any process derives from the run id alone
    assert {span.context.trace_id for span in found.values()} == {tracing.trace_id(run.run_id)}
    root = found["run traced"]
    assert root.parent is None
    assert root.context.span_id == tracing.run_span_id(run.run_id)
    for step in ("a", "b"):
        dispatch, attempt = found[f"dispatch {step}"], found[f"job {step}"]
        assert parent_of(dispatch) == root.context.span_id
        assert dispatch.kind is trace.SpanKind.PRODUCER
        assert attempt.kind is trace.SpanKind.CONSUMER
        assert parent_of(attempt) == dispatch.context.span_id
        # the handler's own span is a child of the attempt's
        assert parent_of(found[f"handler {step}"]) == attempt.context.span_id
        assert attempt.attributes is not None
        assert attempt.attributes["warden.job.outcome"] == "succeeded"
        assert attempt.attributes["warden.job_id"] == f"{run.run_id}:{step}@1"
    gate = found["approval gate"]
    assert parent_of(gate) == root.context.span_id
    assert gate.attributes is not None
    assert gate.attributes["warden.approval.status"] == "approved"
    assert gate.attributes["warden.approval.decided_by"] == "bob"

    # the times come from the rows: the run's span is its life, the approval's the wait
    detail = await support.detail(db, run.run_id)
    ended = detail.run
    assert ended.status is RunStatus.SUCCEEDED and ended.finished_at is not None
    assert root.start_time == tracing._ns(ended.created_at)
    assert root.end_time == tracing._ns(ended.finished_at)
    [decided] = detail.approvals
    assert decided.decided_at is not None
    assert gate.start_time == tracing._ns(decided.requested_at)
    assert gate.end_time == tracing._ns(decided.decided_at)
    # the traceparent the worker got (and the job row stores) names the dispatch span
    output = {s.step_id: s.output for s in detail.steps}
    dispatch_a = found["dispatch a"].context
    assert output["a"]["traceparent"] == (
        f"00-{dispatch_a.trace_id:032x}-{dispatch_a.span_id:016x}-01")


async def test_a_failed_attempt_is_an_error_span_and_the_retry_a_new_one(
        db: Database, svc: Services, scheduler: Scheduler,
        spans: InMemorySpanExporter) -> None:
    await support.store(db, """
id: flaky
name: flaky
version: 1.0.0
steps:
  a: {type: job, topic: traced.flaky, retries: {max_attempts: 2, backoff_ms: 1}}
""")
    run = await support.start(svc, "flaky")
    await support.settle(scheduler)
    attempts = 0

    def flaky(job: Job) -> dict[str, int]:  # sync: runs in a thread
        nonlocal attempts
        attempts += 1
        with trace.get_tracer("tests.handler").start_as_current_span("handler a"):
            if job.attempt == 1:
                raise RuntimeError("first attempt fails")
            return {"attempt": job.attempt}

    stop = asyncio.Event()
    worker = Worker(db, flaky, WorkerConfig(topics=("traced.flaky",), poll_interval_s=0.05))
    task = asyncio.create_task(worker.run(stop))
    try:
        await drive(db, scheduler, run.run_id, "succeeded")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)

    finished = spans.get_finished_spans()
    jobs = sorted((s for s in finished if s.name == "job a"),
                  key=lambda s: s.attributes["warden.attempt"] if s.attributes else 0)
    dispatches = {s.attributes["warden.attempt"]: s for s in finished
                  if s.name == "dispatch a" and s.attributes}
    assert [s.status.status_code for s in jobs] == [trace.StatusCode.ERROR,
                                                    trace.StatusCode.UNSET]
    assert jobs[0].events[0].name == "exception"
    for span in jobs:
        assert span.attributes is not None
        assert parent_of(span) == dispatches[span.attributes["warden.attempt"]].context.span_id
    # a sync handler's thread sees the attempt's span as current too
    handlers = [s for s in finished if s.name == "handler a"]
    assert sorted(parent_of(s) or 0 for s in handlers) == sorted(
        s.context.span_id for s in jobs)
    assert attempts == 2


@pytest.fixture(scope="module")
def login_roles(pg_server_url: str, migrated_template: str) -> Iterator[LoginRoles]:
    yield from roles_mod.create(pg_server_url)


def _claim_as(db_url: str, role: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("INSERT INTO warden.worker_grants (role_name, tenant_id, topic_glob, "
                      "granted_by) VALUES (%s, '*', 'traced.*', 'test') "
                      "ON CONFLICT DO NOTHING", [role])
    with psycopg.connect(as_role(db_url, role), autocommit=True) as conn:
        return conn.execute(
            "SELECT job_id, traceparent FROM warden.claim_jobs(ARRAY['traced.work'], "
            "'psql', 10, interval '1 minute')").fetchall()


async def test_a_sql_worker_gets_the_traceparent_with_its_claim(
        db: Database, db_url: str, svc: Services, scheduler: Scheduler,
        login_roles: LoginRoles, spans: InMemorySpanExporter) -> None:
    await support.store(db, FLOW)
    run = await support.start(svc, "traced")
    await support.settle(scheduler)
    [(job_id, traceparent)] = _claim_as(db_url, login_roles.worker_a)
    [dispatch] = [s for s in spans.get_finished_spans() if s.name == "dispatch a"]
    assert job_id == f"{run.run_id}:a@1"
    assert traceparent == (f"00-{tracing.trace_id(run.run_id):032x}-"
                           f"{dispatch.context.span_id:016x}-01")
    with psycopg.connect(db_url) as conn:
        stored = conn.execute("SELECT traceparent FROM warden.jobs WHERE job_id = %s",
                              [job_id]).fetchone()
    assert stored == (traceparent,)


async def test_with_traces_off_the_column_is_null(
        db: Database, db_url: str, svc: Services, scheduler: Scheduler,
        login_roles: LoginRoles) -> None:
    assert not tracing.enabled()
    await support.store(db, FLOW)
    run = await support.start(svc, "traced")
    await support.settle(scheduler)
    assert _claim_as(db_url, login_roles.worker_b) == [(f"{run.run_id}:a@1", None)]


def test_the_ids_are_derived_from_the_run() -> None:
    run_id = UUID("8a4c3f9e-2b1d-4e6f-9a7b-0c1d2e3f4a5b")
    assert tracing.trace_id(run_id) == tracing.trace_id(UUID(str(run_id)))
    assert tracing.trace_id(run_id) != run_id.int  # hashed: a ratio sampler sees no bias
    assert tracing.dispatch_span_id(f"{run_id}:a@1") != tracing.dispatch_span_id(
        f"{run_id}:a@2")
    assert tracing.traceparent(run_id, "x") is None  # off


@pytest.mark.parametrize(("env", "trigger"), [
    ({}, None),
    ({"WARDEN_OTEL": "1"}, "WARDEN_OTEL"),
    ({"WARDEN_OTEL": "0", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"},
     "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
    ({"OTEL_TRACES_EXPORTER": "console"}, "OTEL_TRACES_EXPORTER"),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
     "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}, None),
])
def test_which_variables_turn_traces_on(env: dict[str, str], trigger: str | None) -> None:
    assert load(env).traces == trigger


def test_a_bad_switch_names_the_variable() -> None:
    with pytest.raises(Exception, match="WARDEN_OTEL must be 1"):
        load({"WARDEN_OTEL": "yes"})


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "WARDEN_OTEL"))}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**clean, **env}, check=False)


def test_with_traces_off_nothing_of_opentelemetry_is_imported() -> None:
    """The hot paths (a scheduler pass, a worker's job) check one global and return."""
    done = _python("""
import sys
from uuid import uuid4
import engine.cli.main, engine.daemons.serve, engine.worker.runner
from engine.core.settings import load
from engine.process import tracing
assert not tracing.configure(load().traces)
assert tracing.traceparent(uuid4(), "j") is None
with tracing.job_attempt(None, "w") as span:
    span.outcome("succeeded")
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
assert not loaded, loaded
""")
    assert done.returncode == 0, done.stderr


def test_asked_for_without_the_extra_names_the_variable() -> None:
    done = _python("""
import sys
sys.modules["opentelemetry"] = None  # as if pgwarden[otel] were not installed
from engine.process import tracing
tracing.configure("OTEL_EXPORTER_OTLP_ENDPOINT")
""")
    assert done.returncode == 1
    assert "OTEL_EXPORTER_OTLP_ENDPOINT asks for traces, but OpenTelemetry is not " \
           "installed: pip install 'pgwarden[otel]'" in done.stderr


def test_the_exporters_come_from_the_standard_variables() -> None:
    """OTEL_TRACES_EXPORTER picks the exporter (here the SDK's console one),
    OTEL_SERVICE_NAME the service; an unknown exporter is refused by name."""
    code = """
from datetime import datetime, timezone
from uuid import uuid4
from engine.core.enums import RunStatus
from engine.process import tracing
from engine.store.records import RunRow
from opentelemetry import trace
assert tracing.configure("OTEL_TRACES_EXPORTER")
at = datetime.now(timezone.utc)
run = RunRow("t", uuid4(), "wf", "1", RunStatus.FAILED, {}, None, None, None, "d", None,
             "alice", at, at, at, None, False, 0, "")
tracing.run_ended(run, [])
trace.get_tracer_provider().shutdown()
print("trace", format(tracing.trace_id(run.run_id), "032x"))
"""
    done = _python(code, OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="ops-warden")
    assert done.returncode == 0, done.stderr
    trace_hex = done.stdout.strip().splitlines()[-1].split()[1]
    assert f'"trace_id": "0x{trace_hex}"' in done.stdout
    assert '"name": "run wf"' in done.stdout and '"service.name": "ops-warden"' in done.stdout
    assert '"status_code": "ERROR"' in done.stdout
    refused = _python(code, OTEL_TRACES_EXPORTER="zipkin-nope")
    assert refused.returncode == 1
    assert "OTEL_TRACES_EXPORTER: no exporter named 'zipkin-nope'" in refused.stderr
