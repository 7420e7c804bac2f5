"""`warden demo`: the seed's incident-remediation workflow with built-in sample workers.

First call: starts a run that stops at the approval gate and says how to approve it.
`--approve`: approves the waiting run as a demo operator, runs it to the end, and prints
the final status and the timeline. Uses WARDEN_DATABASE_URL or the embedded server.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from uuid import UUID

from engine import approvals, demo_handlers, governance, migrate, runs, timeline, workflows
from engine.cli_format import format_timeline
from engine.enums import ApprovalStatus, RunStatus
from engine.policy import Verdict
from engine.resources import package_file
from engine.runtime import database_url
from engine.serve import EngineConfig, run_engine
from engine.services import Services
from engine.settings import Settings
from engine.store import Database
from engine.worker import Worker, WorkerConfig

TENANT = "default"
WORKFLOW = "incident-remediation"
SUBMITTER = "demo-submitter"
OPERATOR = "demo-operator"  # not the submitter: nobody may approve their own run
ADMIN = "demo-admin"
DEADLINE_S = 60.0


async def run_demo(settings: Settings, *, approve: bool, reset: bool) -> int:
    began = time.monotonic()
    if reset:
        if settings.database_url:
            print("warden demo: --reset only clears the embedded database; "
                  "WARDEN_DATABASE_URL is set, so nothing was cleared", file=sys.stderr)
        else:
            shutil.rmtree(settings.data_dir / "pgdata", ignore_errors=True)
    with database_url(settings) as url:
        await asyncio.to_thread(migrate.upgrade, url)
        async with Database(url, max_size=8) as db:
            print(f"database ready in {time.monotonic() - began:.1f}s")
            svc = Services.create(db, policy_default=Verdict(settings.policy_default),
                                  approval_expires_ms=settings.approval_expires_ms)
            return await _drive(svc, approve=approve)


async def _install(svc: Services) -> None:
    """The demo workflow and policy; idempotent, so a second start changes nothing."""
    source = package_file("examples/incident-remediation.yaml").read_bytes()
    await workflows.store(svc.db, tenant_id=TENANT, source=source, media_type=None,
                          created_by=SUBMITTER)
    policy = package_file("examples/demo-policy.yaml").read_bytes()
    stored = await governance.store_bundle(svc.db, tenant_id=TENANT, source=policy,
                                           media_type=None, created_by=ADMIN)
    if await governance.active_pointer(svc.db, TENANT) != stored.row.snapshot_hash:
        await governance.activate(svc.db, tenant_id=TENANT,
                                  snapshot_hash=stored.row.snapshot_hash, activated_by=ADMIN)
        print(f"activated policy snapshot {stored.row.snapshot_hash[:12]}… for {TENANT}")


async def _drive(svc: Services, *, approve: bool) -> int:
    db = svc.db
    await _install(svc)
    run_id = await _waiting_demo_run(db) if approve else None
    if run_id is None:
        started = await runs.start(svc, tenant_id=TENANT, workflow_id=WORKFLOW,
                                   input={"incident_id": "INC-7781"}, created_by=SUBMITTER)
        run_id = started.run.run_id
        print(f"started run {run_id} of {WORKFLOW}")

    stop = asyncio.Event()
    worker = Worker(db, demo_handlers.handle,
                    WorkerConfig(topics=demo_handlers.TOPICS, concurrency=4,
                                 poll_interval_s=0.2, name="demo-worker"))
    background = [asyncio.create_task(run_engine(svc, EngineConfig(poll_interval_s=0.2), stop)),
                  asyncio.create_task(worker.run(stop))]
    try:
        status = await _until(db, run_id, {RunStatus.WAITING} | _FINAL, approve=approve)
        if status is RunStatus.WAITING and approve:
            pending = await _pending_approval(db, run_id)
            await approvals.decide(db, tenant_id=TENANT, approval_id=pending, approve=True,
                                   principal=OPERATOR, reason="demo: plan reviewed")
            print(f"approved {pending} as {OPERATOR}")
            status = await _until(db, run_id, _FINAL, approve=approve)
    finally:
        stop.set()
        await asyncio.gather(*background, return_exceptions=True)

    if status is RunStatus.WAITING:
        pending = await _pending_approval(db, run_id)
        print(f"\nrun {run_id} is waiting at approval_gate (approval {pending}).")
        print("Approve it and run to the end with:\n    warden demo --approve")
        print(f"or decide it yourself:\n    warden approvals approve {pending} --as ops-oncall "
              "--reason 'plan reviewed'")
        return 0
    print(f"\nrun {run_id} finished: {status}\n")
    for line in format_timeline(await timeline.all_events(db, TENANT, run_id)):
        print(line)
    print(f"\ntimeline chain verified: {await timeline.verify(db, run_id)}")
    return 0 if status is RunStatus.SUCCEEDED else 1


_FINAL = frozenset(s for s in RunStatus if s.is_final)


async def _until(db: Database, run_id: UUID, wanted: frozenset[RunStatus] | set[RunStatus], *,
                 approve: bool) -> RunStatus:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        async with db.connection() as conn:
            status = (await runs.get_row(conn, TENANT, run_id)).status
        if status in wanted or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.1)


async def _waiting_demo_run(db: Database) -> UUID | None:
    for row in await approvals.page(db, tenant_id=TENANT, status=ApprovalStatus.PENDING):
        if row.requested_by == SUBMITTER:
            return row.run_id
    return None


async def _pending_approval(db: Database, run_id: UUID) -> UUID:
    for row in await approvals.page(db, tenant_id=TENANT, status=ApprovalStatus.PENDING):
        if row.run_id == run_id:
            return row.approval_id
    raise RuntimeError(f"run {run_id} has no pending approval")
