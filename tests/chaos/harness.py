"""What every chaos case needs: a deadline, worker fleets to kill, queries that survive a
database restart, and the figures each case prints.

Each case prints one line, ``chaos <case>: acknowledged=… lost=… duplicated_completions=…
re_executions=… recovered=…``, to the terminal even under output capture, before it
asserts (so a failing case still shows its figures).

The figures come from two sides that must agree (`audit`): the handlers' own record
(tests/chaos/handlers.py: an fsynced file per worker process, which Warden never
writes) and Warden's tables. Their terms:

- an *accepted completion* of a job step of a run: a handler execution whose result
  Warden recorded, i.e. a job row in status ``succeeded`` (its result names the
  execution), a ``job.succeeded`` event, or the step's stored output;
- *lost*: an acknowledged run that did not succeed in Warden, or one of whose job steps
  no handler execution recorded as completed;
- *duplicated completions*: job steps of a run with more than one accepted completion
  (two succeeded job rows, two ``job.succeeded`` events, or results of two different
  executions stored);
- *unrecorded*: accepted completions whose execution the record does not show as
  completed exactly once, by that very job (Warden kept a result no handler returned);
- *re-executions*: handler executions of a job step beyond its first, accepted or not
  (a crash or a fenced attempt makes the next attempt run the step again).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import psycopg
import pytest

from tests.chaos.handlers import COMPLETED, STARTED, Recorded, read_record
from tests.e2e.processes import Processes

T = TypeVar("T")

SECRET_KEY = "chaos-suite-secret-key-0123456789abcdef"  # >= 32 characters


def retries(max_attempts: int = 25, backoff_ms: int = 100) -> str:
    return f"{{max_attempts: {max_attempts}, backoff_ms: {backoff_ms}, jitter: 0}}"


def fan_out_workflow(workflow_id: str, topic: str, *, width: int = 8) -> str:
    """``root`` → ``f1…f<width>`` in parallel → ``join``: width + 2 job steps."""
    retry = retries()
    lines = [f"id: {workflow_id}", f"name: {workflow_id}", "version: 1.0.0", "steps:",
             f"  root: {{type: job, topic: {topic}, retries: {retry}}}"]
    lines += [f"  f{i}: {{type: job, topic: {topic}, depends_on: [root], retries: {retry}}}"
              for i in range(1, width + 1)]
    fan = ", ".join(f"f{i}" for i in range(1, width + 1))
    lines.append(f"  join: {{type: job, topic: {topic}, depends_on: [{fan}], retries: {retry}}}")
    return "\n".join(lines) + "\n"


class Deadline:
    """The hard limit of one case: every wait checks it, and nothing waits past it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return self.at - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise AssertionError(f"case deadline ({self.seconds:.0f}s) passed while {what}")


async def wait_until(check: Callable[[], Awaitable[T | None]], deadline: Deadline, what: str,
                     *, timeout: float | None = None, interval: float = 0.2) -> T:
    """Polls ``check`` until truthy; fails at ``timeout`` (or the case deadline)."""
    until = time.monotonic() + min(timeout if timeout is not None else 1e9, deadline.left())
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > until:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ------------------------------------------------------------------ database access

async def query(url: str, text: str, params: Sequence[Any] | None = None, *,
                deadline: Deadline | None = None) -> list[tuple[Any, ...]]:
    """One statement on a fresh connection, retried while the server restarts."""
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                    url, autocommit=True, connect_timeout=3) as conn:
                cur = await conn.execute(text, params)
                return await cur.fetchall() if cur.description else []
        except psycopg.OperationalError:
            if deadline is not None:
                deadline.check(f"querying {text[:60]!r}")
            await asyncio.sleep(0.2)


async def open_runs(url: str, deadline: Deadline) -> int:
    [(n,)] = await query(url, "SELECT count(*) FROM warden.runs WHERE finished_at IS NULL",
                         deadline=deadline)
    return int(n)


async def wait_all_finished(url: str, deadline: Deadline, *, timeout: float) -> None:
    async def done() -> bool:
        return await open_runs(url, deadline) == 0

    await wait_until(done, deadline, "every run to finish", timeout=timeout, interval=0.5)


@dataclass
class Figures:
    acknowledged: int = 0
    lost: int = 0
    duplicated_completions: int = 0
    re_executions: int = 0
    recovered: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self, case: str) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.extra.items())
        return (f"chaos {case}: acknowledged={self.acknowledged} lost={self.lost} "
                f"duplicated_completions={self.duplicated_completions} "
                f"re_executions={self.re_executions} recovered={self.recovered}{extra}")


def show(capsys: pytest.CaptureFixture[str], case: str, figures: Figures) -> None:
    with capsys.disabled():
        print(f"\n{figures.line(case)}", file=sys.stderr, flush=True)


async def lost_runs(url: str, acknowledged: Sequence[UUID], deadline: Deadline
                    ) -> dict[str, str]:
    """Acknowledged runs that did not succeed: run_id -> status (or 'missing')."""
    rows = await query(url, "SELECT run_id::text, status::text FROM warden.runs "
                            "WHERE run_id = ANY(%s)", [list(acknowledged)], deadline=deadline)
    status = dict(rows)
    return {str(r): status.get(str(r), "missing") for r in acknowledged
            if status.get(str(r)) != "succeeded"}


async def steps_without_success(url: str, deadline: Deadline) -> int:
    [(n,)] = await query(url, """
        SELECT count(*) FROM warden.steps s
         WHERE s.type = 'job' AND NOT EXISTS (
               SELECT 1 FROM warden.jobs j WHERE j.tenant_id = s.tenant_id
                  AND j.run_id = s.run_id AND j.step_id = s.step_id
                  AND j.status = 'succeeded')""", deadline=deadline)
    return int(n)


async def recovered_steps(url: str, deadline: Deadline) -> int:
    """Steps that succeeded after an attempt ended otherwise (timed out, released...)."""
    [(n,)] = await query(url, """
        SELECT count(DISTINCT (run_id, step_id)) FROM warden.jobs j
         WHERE j.status = 'succeeded' AND j.attempt > 1""", deadline=deadline)
    return int(n)


@dataclass
class Audit:
    """The acknowledged runs as the handlers' record and Warden's tables show them."""

    not_succeeded: dict[str, str]  # run_id -> its status in Warden (or 'missing')
    never_completed: list[tuple[str, str]]  # (run, step) no handler recorded as completed
    duplicated: dict[tuple[str, str], int]  # (run, step) -> its accepted completions
    unrecorded: list[str]  # accepted completions (job ids) the record does not back
    started: Counter[tuple[str, str]]  # handler executions per (run, step)
    completed: int  # handler executions recorded as completed, accepted or not

    @property
    def lost(self) -> set[str]:
        return set(self.not_succeeded) | {run for run, _step in self.never_completed}

    @property
    def re_executions(self) -> int:
        return sum(self.started.values()) - len(self.started)

    def figures(self, acknowledged: int, recovered: int, **extra: Any) -> Figures:
        return Figures(acknowledged=acknowledged, lost=len(self.lost),
                       duplicated_completions=len(self.duplicated),
                       re_executions=self.re_executions, recovered=recovered,
                       extra={**extra, "handler_completions": self.completed,
                              "unrecorded": len(self.unrecorded)})

    def assert_clean(self) -> None:
        """Nothing lost, nothing completed twice, every accepted result backed by the
        record: each message names a few of the offenders."""
        assert not self.not_succeeded, f"acknowledged runs that did not succeed: " \
            f"{dict(list(self.not_succeeded.items())[:5])}"
        assert not self.never_completed, (
            f"{len(self.never_completed)} job steps of acknowledged runs that no handler "
            f"recorded as completed: {self.never_completed[:5]}")
        assert not self.duplicated, (
            f"job steps with more than one accepted completion: "
            f"{dict(list(self.duplicated.items())[:5])}")
        assert not self.unrecorded, (
            f"{len(self.unrecorded)} accepted completions that the handlers' record does "
            f"not show completed exactly once: {self.unrecorded[:5]}")


async def audit(url: str, marks: Path, acknowledged: Sequence[UUID], steps: Sequence[str],
                deadline: Deadline) -> Audit:
    """Checks Warden against the handlers' record (see the module docstring). ``steps``:
    the job steps of the workflow every acknowledged run belongs to, as the test wrote it."""
    record = read_record(marks)
    started: Counter[tuple[str, str]] = Counter(
        r.run_step for r in record if r.event == STARTED)
    completions = [r for r in record if r.event == COMPLETED]
    by_execution: dict[str, list[Recorded]] = {}
    for r in completions:
        by_execution.setdefault(r.execution, []).append(r)
    completed_steps = {r.run_step for r in completions}
    never_completed = [(str(run), step) for run in acknowledged for step in steps
                       if (str(run), step) not in completed_steps]

    jobs = await query(url, "SELECT run_id::text, step_id, job_id, result->>'execution' "
                            "FROM warden.jobs WHERE status = 'succeeded'", deadline=deadline)
    events = await query(url, "SELECT run_id::text, step_id, count(*)::int FROM "
                              "warden.timeline WHERE kind = 'job.succeeded' GROUP BY 1, 2",
                         deadline=deadline)
    outputs = await query(url, "SELECT run_id::text, step_id, output->>'execution' FROM "
                               "warden.steps WHERE type = 'job' AND status = 'succeeded'",
                          deadline=deadline)
    rows: Counter[tuple[str, str]] = Counter()
    executions: dict[tuple[str, str], set[str | None]] = {}
    unrecorded: list[str] = []
    for run, step, job_id, execution in jobs:
        rows[run, step] += 1
        executions.setdefault((run, step), set()).add(execution)
        backing = by_execution.get(execution, []) if execution else []
        if [r.job_id for r in backing] != [job_id]:
            unrecorded.append(job_id)
    for run, step, execution in outputs:
        executions.setdefault((run, step), set()).add(execution)
    accepted = Counter({key: len(found) for key, found in executions.items()})
    for run, step, n in events:
        accepted[run, step] = max(accepted[run, step], n)
    accepted |= rows  # Counter union: the largest of the three views
    return Audit(
        not_succeeded=await lost_runs(url, acknowledged, deadline),
        never_completed=never_completed,
        duplicated={key: n for key, n in accepted.items() if n > 1},
        unrecorded=unrecorded, started=started, completed=len(completions))


def started_jobs(marks: Path) -> set[str]:
    """Job ids some handler started, by the handlers' record."""
    return {r.job_id for r in read_record(marks) if r.event == STARTED}


# ------------------------------------------------------------------ processes

@dataclass
class Fleet:
    """``size`` worker processes of one kind; any can be SIGKILLed and replaced."""

    procs: Processes
    args: list[str]
    size: int
    env: dict[str, str] = field(default_factory=dict)
    alive: list[subprocess.Popen[bytes]] = field(default_factory=list)
    kills: int = 0

    def start(self) -> Fleet:
        while len(self.alive) < self.size:
            self.alive.append(self.procs.warden(*self.args, **self.env))
        return self

    def kill_one(self, rng: random.Random) -> int:
        victim = self.alive.pop(rng.randrange(len(self.alive)))
        kill(victim)
        self.kills += 1
        return victim.pid

    def replace_dead(self, *, expected_code: int | None = None) -> int:
        """Restarts members that died by themselves; returns how many. A death with any
        other exit code than ``expected_code`` (a failpoint's) fails the case at once,
        with the member's log: a worker that cannot start would otherwise be restarted
        until the deadline."""
        dead = [p for p in self.alive if p.poll() is not None]
        for proc in dead:
            if proc.returncode != expected_code:
                raise AssertionError(f"worker {proc.pid} exited {proc.returncode} by itself:"
                                     f"\n{log_of(self.procs, proc)[-2000:]}")
            self.alive.remove(proc)
        self.start()
        return len(dead)


def worker_args(topics: Sequence[str], handler: str, *, concurrency: int,
                shutdown_timeout: float | None = None, name: str | None = None) -> list[str]:
    args = ["worker", "--handler", handler, "--concurrency", str(concurrency)]
    for topic in topics:
        args += ["--topic", topic]
    if shutdown_timeout is not None:
        args += ["--shutdown-timeout", str(shutdown_timeout)]
    if name is not None:
        args += ["--name", name]
    return args


def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
    if sig == signal.SIGKILL:
        proc.wait(timeout=10)


def kill_all(procs: Processes) -> None:
    """The hard stop at the end of every case: SIGCONT (a stopped process cannot die of
    SIGTERM), then SIGKILL whatever still runs."""
    for proc in procs.started:
        if proc.poll() is None:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(proc.pid, sig)
                except ProcessLookupError:
                    break
    for proc in procs.started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def log_of(procs: Processes, proc: subprocess.Popen[bytes]) -> str:
    index = procs.started.index(proc)
    [path] = procs.logs.glob(f"{index:02d}-*.log")
    return path.read_text(errors="replace")


async def create_key(url: str, env: dict[str, str]) -> str:
    """`warden keys create --role admin --name chaos`: the key is its first stdout line."""
    from tests.e2e.processes import REPO

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.cli", "keys", "create", "--role", "admin",
        "--name", "chaos", cwd=REPO, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO), "WARDEN_DATABASE_URL": url, **env})
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    return out.decode().splitlines()[0].strip()


# ------------------------------------------------------------------ the API of `warden serve`

@dataclass
class Api:
    base: str
    key: str

    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}


async def start_api(chaos_procs: Processes, url: str) -> tuple[Api, subprocess.Popen[bytes]]:
    """A `warden serve` on a free port, and an admin key for it, once /readyz answers."""
    import httpx

    key = await create_key(url, {"WARDEN_SECRET_KEY": SECRET_KEY})
    port = free_port()
    proc = chaos_procs.warden("serve", WARDEN_HTTP_ADDR=f"127.0.0.1:{port}")
    api = Api(f"http://127.0.0.1:{port}/api/v1", key)
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            try:
                if (await client.get(f"{api.base}/readyz")).status_code == 200:
                    return api, proc
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError("warden serve did not become ready")
            await asyncio.sleep(0.1)


def serve(procs: Processes, **env: str) -> subprocess.Popen[bytes]:
    """`warden serve` with its API on a free port (two on one port: the second would fail)."""
    return procs.warden("serve", **{"WARDEN_HTTP_ADDR": f"127.0.0.1:{free_port()}", **env})
