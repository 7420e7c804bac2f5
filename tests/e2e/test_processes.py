"""Whole runs driven by real `warden serve` and `warden worker` processes."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path
from uuid import UUID

import pytest

from engine.core.enums import ApprovalStatus, JobStatus, RunStatus
from engine.core.resources import package_file
from engine.governance import approvals, worker_grants
from engine.store import Database
from tests import support
from tests.e2e.processes import Processes, free_port
from tests.roles import LoginRoles, as_role

pytestmark = pytest.mark.anyio

DEMO_TOPICS = support.SEED_TOPICS


async def _status(db: Database, run_id: UUID) -> RunStatus:
    return (await support.detail(db, run_id)).run.status


async def _until_status(db: Database, run_id: UUID, wanted: RunStatus,
                        timeout: float = 30) -> None:
    async def check() -> bool:
        status = await _status(db, run_id)
        if status.is_final and status is not wanted:
            raise AssertionError(f"run ended {status}, expected {wanted}")
        return status is wanted

    await support.wait_for(check, timeout=timeout, what=f"run {run_id} to be {wanted}")


async def test_seed_workflow_end_to_end_with_worker_processes(
        db: Database, procs: Processes) -> None:
    await support.store(db, package_file("examples/incident-remediation.yaml").read_text())
    procs.serve()
    procs.worker(*DEMO_TOPICS, handler="engine.examples.handlers:handle")
    run = await support.start(db, "incident-remediation", {"incident_id": "INC-7781"},
                              by="alice")
    await _until_status(db, run.run_id, RunStatus.WAITING)
    [approval] = (await support.detail(db, run.run_id)).approvals
    await approvals.decide(db, tenant_id="default", approval_id=approval.approval_id,
                           approve=True, principal="bob", reason="plan reviewed")
    await _until_status(db, run.run_id, RunStatus.SUCCEEDED)

    detail = await support.detail(db, run.run_id)
    apply = next(s for s in detail.steps if s.step_id == "apply_patch")
    assert apply.output["rolled_back"] == "checkout"
    check = next(s for s in detail.steps if s.step_id == "check_hosts")
    # a for_each over the affected hosts: one item per host, in order
    assert [o["host"] for o in check.output] == ["checkout-1", "checkout-2", "checkout-3"]
    kinds = await support.kinds(db, run.run_id)
    job_steps = ["step.ready", "policy.decision", "job.dispatched", "job.claimed",
                 "job.succeeded"]
    head = ["run.created", *["policy.decision"] * 5, "run.started", *job_steps, *job_steps]
    assert kinds[:len(head)] == head
    # the gate's condition (high severity: asked), then the gate
    gate = kinds.index("approval.requested") - 2
    # patch_plan and the three host checks, in whatever order the worker ran them
    assert Counter(kinds[len(head):gate]) == {
        "step.ready": 2, "foreach.expanded": 1, "foreach.ended": 1, "policy.decision": 4,
        "job.dispatched": 4, "job.claimed": 4, "job.succeeded": 4}
    assert kinds[gate:] == [
        "step.condition", "step.ready", "approval.requested", "run.waiting",
        "approval.approved", "step.condition", "step.ready", "policy.decision",
        "job.dispatched", "run.resumed", "job.claimed", "job.checkpointed",
        "job.succeeded", "step.ready", "notify.sent", "run.succeeded"]
    async with db.connection() as conn:
        from engine.store import timeline as timeline_q
        assert await timeline_q.verify(conn, run.run_id)


async def test_fan_out_steps_hold_leases_at_the_same_time(
        db: Database, procs: Processes, marks: Path) -> None:
    await support.store(db, """
id: fan
name: fan
version: 1.0.0
steps:
  a: {type: job, topic: t.fan}
  b: {type: job, topic: t.fan}
  c: {type: job, topic: t.fan}
""")
    procs.serve()
    procs.worker("t.fan", concurrency=3)
    behave = {s: {"sleep_s": 0.6} for s in "abc"}
    run = await support.start(db, "fan", {"behave": behave, "marks": str(marks)})
    await _until_status(db, run.run_id, RunStatus.SUCCEEDED)
    events = await support.events(db, run.run_id)
    claimed = [e.seq for e in events if e.kind == "job.claimed"]
    succeeded = [e.seq for e in events if e.kind == "job.succeeded"]
    assert len(claimed) == 3 and max(claimed) < min(succeeded)  # overlapping leases


async def test_failing_once_then_succeeding_retries_after_backoff(
        db: Database, procs: Processes, marks: Path) -> None:
    await support.store(db, """
id: flaky
name: flaky
version: 1.0.0
steps:
  work:
    type: job
    topic: t.flaky
    retries: {max_attempts: 3, backoff_ms: 1000, jitter: 0}
""")
    procs.serve()
    procs.worker("t.flaky")
    run = await support.start(db, "flaky", {"behave": {"work": {"fail_attempts": 1}},
                                            "marks": str(marks)})
    await _until_status(db, run.run_id, RunStatus.SUCCEEDED)
    jobs = (await support.detail(db, run.run_id)).jobs
    assert [(j.attempt, j.status) for j in jobs] == [(1, JobStatus.FAILED),
                                                     (2, JobStatus.SUCCEEDED)]
    assert jobs[0].job_id.endswith(":work@1") and jobs[1].job_id.endswith(":work@2")
    assert jobs[0].finished_at is not None and jobs[1].started_at is not None
    assert (jobs[1].started_at - jobs[0].finished_at).total_seconds() >= 1.0
    assert jobs[0].error["message"] == "planned failure of attempt 1"


async def test_sigkilled_worker_resumes_from_its_checkpoint_on_the_next_attempt(
        db: Database, procs: Processes, marks: Path) -> None:
    await support.store(db, """
id: crashy
name: crashy
version: 1.0.0
steps:
  work:
    type: job
    topic: t.crash
    retries: {max_attempts: 2, backoff_ms: 0}
""")
    procs.serve()
    victim = procs.worker("t.crash", WARDEN_LEASE_MS="1500")
    run = await support.start(db, "crashy", {"behave": {"work": {"hang_after_checkpoint": True}},
                                             "marks": str(marks)})
    hanging = marks / "hanging-work"

    async def is_hanging() -> bool:
        return hanging.exists()

    await support.wait_for(is_hanging, timeout=30, what="the handler to save and hang")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    procs.worker("t.crash", WARDEN_LEASE_MS="1500")
    await _until_status(db, run.run_id, RunStatus.SUCCEEDED)

    detail = await support.detail(db, run.run_id)
    assert [(j.attempt, j.status) for j in detail.jobs] == [(1, JobStatus.TIMED_OUT),
                                                            (2, JobStatus.SUCCEEDED)]
    output = detail.steps[0].output
    assert output["attempt"] == 2
    assert output["resumed_from"] == {"progress": "half", "pid": victim.pid}
    assert output["side_effect_key"] == f"{run.run_id}:work"
    assert "job.timed_out" in await support.kinds(db, run.run_id)


async def test_two_servers_and_four_workers_run_200_seed_runs_exactly_once(
        db: Database, procs: Processes, marks: Path) -> None:
    await support.store(db, support.SEED_WORKFLOW)
    for _ in range(2):
        procs.serve()
    for _ in range(4):
        procs.worker(*DEMO_TOPICS, concurrency=8)
    run_ids = [(await support.start(db, "incident-remediation", {"marks": str(marks), "i": i},
                                    by="submitter")).run_id for i in range(200)]

    async def approve_waiting() -> bool:
        for pending in await approvals.page(db, tenant_id="default",
                                            status=ApprovalStatus.PENDING, limit=1000):
            await approvals.decide(db, tenant_id="default", approval_id=pending.approval_id,
                                   approve=True, principal="auto-approver")
        async with db.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM warden.runs WHERE finished_at IS NULL")
            row = await cur.fetchone()
        return row is not None and row[0] == 0

    await support.wait_for(approve_waiting, timeout=240, interval=0.5,
                           what="all 200 runs to finish")
    async with db.connection() as conn:
        statuses = await (await conn.execute(
            "SELECT status::text, count(*) FROM warden.runs GROUP BY 1")).fetchall()
        jobs = await (await conn.execute(
            "SELECT count(*), count(DISTINCT (run_id, step_id)), "
            "count(*) FILTER (WHERE status = 'succeeded') FROM warden.jobs")).fetchone()
        completions = await (await conn.execute(
            "SELECT count(*), count(DISTINCT job_id) FROM warden.timeline "
            "WHERE kind = 'job.succeeded'")).fetchone()
        broken = await (await conn.execute(
            "SELECT count(*) FROM warden.runs WHERE NOT warden.verify_timeline(run_id)"
        )).fetchone()
    assert statuses == [("succeeded", 200)]
    assert jobs == (800, 800, 800)  # 4 job steps per run, one attempt each
    assert completions == (800, 800)  # every job completed exactly once
    assert broken == (0,)
    executions = (marks / "executions").read_text().split()
    assert len(executions) // 2 == 800 and len(run_ids) == 200


def test_serve_on_a_taken_port_exits_with_a_clear_message(procs: Processes) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = procs.warden("serve", WARDEN_HTTP_ADDR=f"127.0.0.1:{port}")
        assert proc.wait(timeout=30) == 2  # a configuration problem, not "not found"
    log = procs.dump_logs()
    assert f"cannot listen on 127.0.0.1:{port} (WARDEN_HTTP_ADDR)" in log
    assert "Task exception was never retrieved" not in log


async def test_serve_and_worker_run_the_seed_workflow_as_least_privileged_roles(
        db: Database, db_url: str, procs: Processes, login_roles: LoginRoles) -> None:
    """`warden serve` as a warden_engine member and `warden worker` as a granted
    warden_worker member (docs/security.md): the same run, end to end, with exactly
    those privileges."""
    await support.store(db, package_file("examples/incident-remediation.yaml").read_text())
    await worker_grants.grant(db, role=login_roles.worker_a, tenant_id="default",
                              topic_glob="job.incident.*", granted_by="test")
    procs.warden("serve", WARDEN_HTTP_ADDR=f"127.0.0.1:{free_port()}",
                 WARDEN_DATABASE_URL=as_role(db_url, login_roles.engine))
    procs.worker(*DEMO_TOPICS, handler="engine.examples.handlers:handle",
                 WARDEN_DATABASE_URL=as_role(db_url, login_roles.worker_a))
    run = await support.start(db, "incident-remediation", {"incident_id": "INC-1"}, by="alice")
    try:
        await _until_status(db, run.run_id, RunStatus.WAITING)
        [approval] = (await support.detail(db, run.run_id)).approvals
        await approvals.decide(db, tenant_id="default", approval_id=approval.approval_id,
                               approve=True, principal="bob", reason="plan reviewed")
        await _until_status(db, run.run_id, RunStatus.SUCCEEDED)
    except AssertionError:
        raise AssertionError(procs.dump_logs()) from None
    async with db.connection() as conn:
        from engine.store import timeline as timeline_q
        assert await timeline_q.verify(conn, run.run_id)
