"""`warden demo`: the seed's incident-remediation workflow with built-in sample workers.

One process holds everything a first look needs: the database (WARDEN_DATABASE_URL, or
the embedded server in the data folder), the engine's loops, the sample workers and,
unless ``--exit-at-gate``, the API and operator page that `warden serve` serves. It
resumes the demo run a previous start left open, else starts two incidents that take the
workflow's two branches: a low-severity one whose approval is skipped by its condition
(it runs to the end on its own) and a high-severity one that asks for approval. It
follows the high one with a live status line, and at the approval gate says how to
decide it; then:

* by default it keeps serving until the run ends (final status and timeline, after the
  low-severity run's when this start began it; exit 0 if both succeeded, else 1) or
  until Ctrl-C/SIGTERM (exit 0; the run stays where it is and the next `warden demo`
  picks it up);
* ``--approve`` approves the gate as a demo operator and runs to the end;
* ``--exit-at-gate`` stops at the gate (exit 0), serving nothing: for scripts.

The operator page needs a key. Each start revokes the demo keys of earlier starts and
creates a new one (printed once): a key only exists as a hash, so an earlier one cannot be
shown again, and keeping its plaintext on disk would break "shown once". Key names are
unique forever (the timeline's actors stay unambiguous), so each start numbers its key:
``demo-operator-1``, ``-2``, … The key's principal is never the run's submitter: nobody
may approve their own run (a database constraint).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from engine.cli.format import format_timeline
from engine.cli.progress import StatusLine, run_summary
from engine.cli.serving import ApiStarter
from engine.core import errors
from engine.core.enums import ApprovalStatus, RunStatus
from engine.core.resources import package_file
from engine.core.settings import Settings
from engine.daemons.serve import EngineConfig, run_engine
from engine.definitions import workflows
from engine.examples import handlers
from engine.governance import apikeys, approvals, decisions, worker_grants
from engine.governance.policy import Verdict
from engine.process import tracing
from engine.process.runtime import database_url, stop_on_signals
from engine.runs import lifecycle, timeline
from engine.runs.services import Services
from engine.store import Database, migrate
from engine.store.records import RunRow, TimelineEvent
from engine.store.scope import across_tenants
from engine.worker.runner import Worker, WorkerConfig

TENANT = "default"
WORKFLOW = "incident-remediation"
# the two incidents of a fresh start: the error rate detect reports decides the severity
# (engine/examples/handlers.py), and the severity the branch (approval or none)
HIGH_INCIDENT = {"incident_id": "INC-7781", "error_rate": 0.07}
LOW_INCIDENT = {"incident_id": "INC-7782", "error_rate": 0.02}
SUBMITTER = "demo-submitter"
OPERATOR = "demo-operator"  # not the submitter: nobody may approve their own run
ADMIN = "demo-admin"
KEY_CREATOR = "warden-demo"  # marks the keys this command made, and may revoke
DEADLINE_S = 60.0  # to reach the gate, or the end once approved, when nobody watches
POLL_S = 0.2


@dataclass(frozen=True)
class DemoOptions:
    approve: bool
    reset: bool
    exit_at_gate: bool
    began: float
    """time.monotonic() when the command started, for the start-up times printed."""


async def run_demo(settings: Settings, options: DemoOptions, api: ApiStarter | None,
                   page_url: str | None = None) -> int:
    """``api`` starts the API and returns once it answers /readyz; it and ``page_url`` (the
    operator page's root) are None with --exit-at-gate."""
    stop = asyncio.Event()
    stop_on_signals(stop)  # before the database starts: Ctrl-C then stops it cleanly
    if options.reset:
        _reset(settings)
    tracing.configure(settings.traces, service="warden-demo")
    with database_url(settings) as url:
        await asyncio.to_thread(migrate.upgrade, url)
        # the demo is the engine, an operator and workers in one process: it acts across
        # tenants (engine/store/scope.py), and its built-in workers claim every tenant's
        # jobs of every topic, which a worker role may only do when granted explicitly
        across_tenants()
        async with Database(url, max_size=10) as db:
            await worker_grants.grant(db, role=None, tenant_id=worker_grants.ALL_TENANTS,
                                      topic_glob="*", granted_by="warden demo")
            print(f"database ready in {time.monotonic() - options.began:.1f}s", flush=True)
            if stop.is_set():
                return 0
            svc = Services.create(db, policy_default=Verdict(settings.policy_default),
                                  approval_expires_ms=settings.approval_expires_ms)
            demo = _Demo(svc, settings, options, stop, page_url)
            return await demo.drive(api)


def _reset(settings: Settings) -> None:
    if settings.database_url:
        print("warden demo: --reset only clears the embedded database; "
              "WARDEN_DATABASE_URL is set, so nothing was cleared", file=sys.stderr)
    else:
        shutil.rmtree(settings.data_dir / "pgdata", ignore_errors=True)


class _Demo:
    def __init__(self, svc: Services, settings: Settings, options: DemoOptions,
                 stop: asyncio.Event, page_url: str | None) -> None:
        self.svc = svc
        self.settings = settings
        self.options = options
        self.stop = stop
        self.page_url = page_url
        self.line = StatusLine()

    async def drive(self, api: ApiStarter | None) -> int:
        await _install(self.svc)
        run_id, low_run = await self._run()
        worker = Worker(self.svc.db, handlers.handle,
                        WorkerConfig(topics=handlers.TOPICS, concurrency=4,
                                     poll_interval_s=POLL_S, name="demo-worker"))
        background = [
            asyncio.create_task(run_engine(self.svc, EngineConfig(poll_interval_s=POLL_S),
                                           self.stop)),
            asyncio.create_task(worker.run(self.stop))]
        try:
            if api is not None:
                key = await _rotate_key(self.svc.db, self.settings)
                background.append(await api(self.svc, self.stop))
                if not self.stop.is_set():  # a signal during start-up stopped it again
                    self._announce_api(key)
            status = await self._follow(run_id)
            low_status = None
            if low_run is not None and status is not None and status.is_final:
                low_status = await self._until_end(low_run)
            interrupted = self.stop.is_set()
        finally:
            self.line.close()
            self.stop.set()
            await asyncio.gather(*background, return_exceptions=True)
        code = 0
        if low_run is not None and status is not None and status.is_final:
            # a low-severity run that did not end in time fails the demo, as the other would
            code = 1 if low_status is None else await self._finish(
                low_run, low_status, interrupted=False)
        return max(code, await self._finish(run_id, status, interrupted=interrupted))

    async def _run(self) -> tuple[UUID, UUID | None]:
        """The run to follow, and the low-severity run this start began (None on resume:
        the engine still takes an earlier one to its end)."""
        open_run = await _open_demo_run(self.svc.db)
        if open_run is not None:
            print(f"resuming run {open_run.run_id} of {WORKFLOW} ({open_run.status}), "
                  f"left open by an earlier start", flush=True)
            return open_run.run_id, None
        # the low one first, so the newest open demo run (the one a restart resumes, see
        # _open_demo_run) is the one with the gate
        runs = []
        for incident, path in ((LOW_INCIDENT, "low severity: no approval asked"),
                               (HIGH_INCIDENT, "high severity: asks for approval")):
            started = await lifecycle.start(self.svc, tenant_id=TENANT, workflow_id=WORKFLOW,
                                            input=incident, created_by=SUBMITTER)
            print(f"started run {started.run.run_id} of {WORKFLOW} for "
                  f"{incident['incident_id']} ({path})", flush=True)
            runs.append(started.run.run_id)
        return runs[1], runs[0]

    async def _until_end(self, run_id: UUID) -> RunStatus | None:
        """The final status of a run with no gate; None if stopped or not ended in time."""
        reached = await self._until_gate_or_end(run_id, set(),
                                                time.monotonic() + DEADLINE_S)
        if reached is None or not reached[0].is_final:
            return None
        return reached[0]

    def _announce_api(self, key: tuple[str, str]) -> None:
        name, plaintext = key
        print(f"API ready in {time.monotonic() - self.options.began:.1f}s: operator page "
              f"{self.page_url}\nAPI key of {name} (roles approver, operator; revoked at the "
              "next `warden demo`), shown once; the page asks for it once:\n"
              f"    {plaintext}", flush=True)

    async def _follow(self, run_id: UUID) -> RunStatus | None:
        """Follows the run to its end and acts at each gate; None if stopped by a signal,
        or (when nobody watches) if it did not move on in time."""
        decided: set[UUID] = set()
        watching = not (self.options.approve or self.options.exit_at_gate)
        while True:
            deadline = None if watching else time.monotonic() + DEADLINE_S
            reached = await self._until_gate_or_end(run_id, decided, deadline)
            if reached is None:
                return None
            status, approval = reached
            if approval is None:
                return status
            decided.add(approval)
            if self.options.approve:
                await approvals.decide(self.svc.db, tenant_id=TENANT, approval_id=approval,
                                       approve=True, principal=OPERATOR,
                                       reason="demo: plan reviewed")
                self.line.say(f"approved {approval} as {OPERATOR}")
            elif self.options.exit_at_gate:
                self.line.close()
                self._print_exit_at_gate(run_id, approval)
                return status
            else:
                self.line.say(self._gate_text(run_id, approval))

    async def _until_gate_or_end(
            self, run_id: UUID, decided: set[UUID], deadline: float | None,
    ) -> tuple[RunStatus, UUID | None] | None:
        """(final status, None), or (waiting, a pending approval not yet acted on)."""
        while not self.stop.is_set():
            detail = await lifecycle.detail(self.svc, TENANT, run_id)
            status = detail.run.status
            self.line.show(run_summary(status, detail.steps, detail.items))
            if status.is_final:
                return status, None
            pending = [a.approval_id for a in detail.approvals
                       if a.status is ApprovalStatus.PENDING and a.approval_id not in decided]
            if status is RunStatus.WAITING and pending:
                return status, pending[0]
            if deadline is not None and time.monotonic() > deadline:
                self.line.say(f"run {run_id} did not move on within {DEADLINE_S:.0f}s "
                              f"(status {status}); its steps are above")
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=POLL_S)
        return None

    def _gate_text(self, run_id: UUID, approval: UUID) -> str:
        warden = _invocation()
        return "\n".join([
            f"\nrun {run_id} is waiting at its approval gate: approval {approval}.",
            "Decide it in any of these ways; this process runs the rest:",
            f"  - in the page: {self.page_url}/approvals/{approval}",
            f"  - from another terminal{self._same_environment()}:",
            f"      {warden} approvals approve {approval} --as ops-oncall "
            "--reason 'plan reviewed'",
            f"  - Ctrl-C here, then: {warden} demo --approve",
            "Waiting for the decision (Ctrl-C stops; the run waits for the next start).\n"])

    def _print_exit_at_gate(self, run_id: UUID, approval: UUID) -> None:
        warden = _invocation()
        print(f"\nrun {run_id} is waiting at its approval gate (approval {approval}).\n"
              f"Approve it and run to the end with:\n    {warden} demo --approve\n"
              f"or decide it yourself{self._same_environment()}, then run it to the end "
              f"with `{warden} demo`:\n    {warden} approvals approve {approval} "
              "--as ops-oncall --reason 'plan reviewed'", flush=True)

    def _same_environment(self) -> str:
        if self.settings.database_url:
            return " with the same WARDEN_DATABASE_URL"
        if os.environ.get("WARDEN_DATA_DIR"):
            return f" with WARDEN_DATA_DIR={shlex.quote(os.environ['WARDEN_DATA_DIR'])}"
        return ""

    async def _finish(self, run_id: UUID, status: RunStatus | None, *,
                      interrupted: bool) -> int:
        db = self.svc.db
        if status is None:
            if interrupted:
                async with db.connection() as conn:
                    now = (await lifecycle.get_row(conn, TENANT, run_id)).status
                again = "" if now.is_final else f" `{_invocation()} demo` picks it up again."
                print(f"\nstopped; run {run_id} is {now}.{again}")
                return 0
            return 1
        if not status.is_final:  # --exit-at-gate, at the gate
            return 0
        print(f"\nrun {run_id} finished: {status}\n")
        events = await timeline.all_events(db, TENANT, run_id)
        for line in format_timeline(events):
            print(line)
        for line in _control_flow(events):
            print(line)
        print(f"\ntimeline chain verified: {await timeline.verify(db, run_id)}")
        return 0 if status is RunStatus.SUCCEEDED else 1


def _control_flow(events: Sequence[TimelineEvent]) -> list[str]:
    """What the timeline's lines leave out: each condition with what it read, and each
    for_each with its items (docs/workflows.md#control-flow)."""
    lines = []
    for e in events:
        if e.kind == "step.condition":
            result = str(e.data["result"]).lower()
            lines.append(f"  {e.step_id}: when {e.data['when']!r} was {result}, having "
                         f"read {json.dumps(e.data['read'])}")
        elif e.kind == "step.skipped" and e.data.get("because") == "condition":
            lines.append(f"  {e.step_id}: skipped by its condition")
        elif e.kind == "foreach.expanded":
            lines.append(f"  {e.step_id}: for_each over {e.data['items']} items, "
                         f"{e.data['max_parallel']} at a time")
    return ["\nbranches and for_each:", *lines] if lines else []


def _invocation() -> str:
    """How the user started warden (`.venv/bin/warden`), so the printed commands paste."""
    program = sys.argv[0] if sys.argv else ""
    return shlex.quote(program) if os.path.basename(program) == "warden" else "warden"


async def _install(svc: Services) -> None:
    """The demo workflow and policy; idempotent, so a second start changes nothing."""
    source = package_file("examples/incident-remediation.yaml").read_bytes()
    await workflows.store(svc.db, tenant_id=TENANT, source=source, media_type=None,
                          created_by=SUBMITTER)
    policy = package_file("examples/demo-policy.yaml").read_bytes()
    stored = await decisions.store_bundle(svc.db, tenant_id=TENANT, source=policy,
                                           media_type=None, created_by=ADMIN)
    if await decisions.active_pointer(svc.db, TENANT) != stored.row.snapshot_hash:
        await decisions.activate(svc.db, tenant_id=TENANT,
                                  snapshot_hash=stored.row.snapshot_hash, activated_by=ADMIN)
        print(f"activated policy snapshot {stored.row.snapshot_hash[:12]}… for {TENANT}")


_KEY_NAME = re.compile(rf"{OPERATOR}-(\d+)")


async def _rotate_key(db: Database, settings: Settings) -> tuple[str, str]:
    """Revokes the demo keys of earlier starts and creates this start's: (name, key)."""
    secret = apikeys.server_secret(settings)
    for _ in range(3):  # two demos started at once on one database may pick the same name
        ours = [(k, int(m[1])) for k in await apikeys.list_keys(db)
                if k.created_by == KEY_CREATOR and (m := _KEY_NAME.fullmatch(k.name))]
        for old, _ in ours:
            if old.revoked_at is None:
                # NotFound: another start revoked it meanwhile, which is what we wanted
                with contextlib.suppress(errors.NotFound):
                    await apikeys.revoke(db, old.key_id)
        number = 1 + max((n for _, n in ours), default=0)
        try:
            row, plaintext = await apikeys.create(
                db, secret, name=f"{OPERATOR}-{number}",
                roles=[apikeys.Role.APPROVER, apikeys.Role.OPERATOR], tenants=[TENANT],
                created_by=KEY_CREATOR)
        except errors.Conflict:
            continue
        return row.name, plaintext
    raise errors.Conflict("could not create a demo key: another `warden demo` keeps "
                          "creating them on this database")


async def _open_demo_run(db: Database) -> RunRow | None:
    """The newest demo run not yet finished, if any (its status tells which)."""
    for status in (RunStatus.WAITING, RunStatus.RUNNING, RunStatus.PENDING):
        filters = lifecycle.RunFilter(status=status, workflow_id=WORKFLOW)
        for row in await lifecycle.page(db, TENANT, filters=filters, limit=20):
            if row.created_by == SUBMITTER:
                return row
    return None
