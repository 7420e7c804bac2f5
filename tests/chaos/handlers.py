"""Handlers for the chaos tests (and tests/e2e/test_shutdown_and_cancel.py), loaded by
`warden worker` processes.

The handlers keep their own record of what they did, outside Warden's tables, so the
chaos cases can check Warden against something it never writes: each worker process
appends to ``<marks>/record-<pid>``, fsynced, one line per event (`RECORD_LINE`):

- ``started <execution> <job_id> <pid>`` when a handler starts, before anything else;
- ``completed <execution> <job_id> <pid>`` when it has done its work, just before it
  returns a result carrying ``"execution": <execution>``.

``<execution>`` is a fresh id per execution (never reused, even if the same job were
handed out twice), so a result Warden stored names the very execution that produced it.
``O_APPEND`` writes of one short line are atomic and a SIGKILL cannot tear one. ``marks``
is a directory named by the run input. Behaviour is steered by the run input too,
documented per handler.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from engine.worker.runner import Job

FAILPOINT_EXIT = 137  # what a process killed by a failpoint exits with

SIDE_EFFECTS_DDL = """
CREATE SCHEMA IF NOT EXISTS chaos;
CREATE TABLE IF NOT EXISTS chaos.side_effects (
    key text PRIMARY KEY,          -- job.side_effect_key: run_id:step_id
    job_id text NOT NULL,          -- the attempt that applied it
    pid integer NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""


def _marks(job: Job) -> Path:
    return Path(job.input["marks"])


RECORD_LINE = "{event} {execution} {job_id} {pid}\n"
STARTED, COMPLETED = "started", "completed"


def _record(job: Job, event: str, execution: str) -> None:
    """Appends one line and fsyncs it. Async handlers call this too, blocking the event
    loop for the fsync: an ``await`` would add a point where the worker could cancel the
    handler (the fencing case relies on a blocked handler returning without one)."""
    line = RECORD_LINE.format(event=event, execution=execution, job_id=job.job_id,
                              pid=os.getpid()).encode()
    fd = os.open(_marks(job) / f"record-{os.getpid()}",
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def record_execution(job: Job) -> str:
    """Records that this execution started; returns its fresh id."""
    execution = uuid.uuid4().hex
    _record(job, STARTED, execution)
    return execution


def record_completion(job: Job, execution: str) -> None:
    """Records that this execution did its work; the handler returns right after."""
    _record(job, COMPLETED, execution)


@dataclass(frozen=True)
class Recorded:
    """One line of the handlers' record."""

    event: str
    execution: str
    job_id: str
    pid: int

    @property
    def run_step(self) -> tuple[str, str]:
        """``(run_id, step_id)`` from the job id ``<run_id>:<step_id>@<attempt>``."""
        run_and_step, _, _attempt = self.job_id.rpartition("@")
        run_id, _, step_id = run_and_step.partition(":")
        return run_id, step_id


def read_record(marks: Path) -> list[Recorded]:
    """Every line of every worker process's record, in file order per process."""
    lines: list[Recorded] = []
    for path in sorted(marks.glob("record-*")):
        text = path.read_text()
        if text and not text.endswith("\n"):
            raise AssertionError(f"{path}: its last line is torn: {text[-200:]!r}")
        for line in text.splitlines():
            event, execution, job_id, pid = line.split(" ")
            if event not in (STARTED, COMPLETED):
                raise AssertionError(f"{path}: unknown event in {line!r}")
            lines.append(Recorded(event, execution, job_id, int(pid)))
    return lines


def _sleep_s(job: Job) -> float:
    """``sleep_s``: seconds, or ``[low, high]`` for a random pause; ``sleep_by_attempt``
    (``{"1": 30}``) overrides it for one attempt; ``sleep_by_step`` for one step."""
    by_attempt = job.input.get("sleep_by_attempt", {})
    by_step = job.input.get("sleep_by_step", {})
    value = by_attempt.get(str(job.attempt), by_step.get(job.step_id, job.input.get("sleep_s", 0)))
    if isinstance(value, list):
        return random.uniform(float(value[0]), float(value[1]))
    return float(value)


async def work(job: Job) -> Any:
    """Records the execution, sleeps per ``sleep_s``, returns. For the SIGKILL storm,
    fencing, restarts and the scheduler kill.

    ``block_by_attempt`` (``{"1": 3}``): after the sleep, block the whole event loop that
    long (``time.sleep``), as a stalled process would: no heartbeat goes out meanwhile.
    ``<marks>/blocking-<job_id>`` is written just before.
    """
    execution = record_execution(job)
    await asyncio.sleep(_sleep_s(job))
    block = float(job.input.get("block_by_attempt", {}).get(str(job.attempt), 0))
    if block:
        (_marks(job) / f"blocking-{job.job_id}").write_text(str(os.getpid()))
        time.sleep(block)
    record_completion(job, execution)
    return {"step": job.step_id, "attempt": job.attempt, "pid": os.getpid(),
            "execution": execution}


async def side_effect(job: Job) -> Any:
    """Applies a side effect once per ``job.side_effect_key`` in ``chaos.side_effects``
    (INSERT … ON CONFLICT DO NOTHING), then checkpoints, then returns.

    Failpoint ``die_at`` (``after_effect`` or ``after_checkpoint``): the first execution of
    each step that gets there kills its whole process with ``os._exit`` — after the side
    effect, before the completion. Which key fired is kept in ``<marks>/fired-<step>-<run>``
    (created with O_EXCL, so it fires once per key even if attempts overlap).
    """
    execution = record_execution(job)
    resumed_from = job.checkpoint
    async with await psycopg.AsyncConnection.connect(
            os.environ["WARDEN_DATABASE_URL"], autocommit=True) as conn:
        cur = await conn.execute(
            "INSERT INTO chaos.side_effects (key, job_id, pid) VALUES (%s, %s, %s) "
            "ON CONFLICT (key) DO NOTHING RETURNING key",
            (job.side_effect_key, job.job_id, os.getpid()))
        applied_now = await cur.fetchone() is not None
        cur = await conn.execute("SELECT job_id FROM chaos.side_effects WHERE key = %s",
                                 (job.side_effect_key,))
        applied_by = (await cur.fetchone() or (None,))[0]
    with (_marks(job) / "effects").open("a") as out:
        out.write(f"{job.job_id} {'applied' if applied_now else 'already-there'}\n")
    die_at = job.input.get("die_at")
    if die_at == "after_effect":
        _failpoint(job)
    await job.save_checkpoint({"effect_applied_by": applied_by})
    if die_at == "after_checkpoint":
        _failpoint(job)
    record_completion(job, execution)
    return {"attempt": job.attempt, "applied_now": applied_now, "resumed_from": resumed_from,
            "execution": execution}


def _failpoint(job: Job) -> None:
    name = f"fired-{job.step_id}-{job.run_id}"
    try:
        fd = os.open(_marks(job) / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # fired once for this key already: this attempt goes on to complete
    os.write(fd, f"{job.job_id} {os.getpid()}\n".encode())
    os.close(fd)
    os._exit(FAILPOINT_EXIT)  # the process dies between the side effect and the completion


async def cancellable(job: Job) -> Any:
    """Async: sleeps ``sleep_s`` (long), writing ``<marks>/started-<step>`` first and
    ``<marks>/cancelled-<step>`` (with the wall time) if its task is cancelled."""
    execution = record_execution(job)
    (_marks(job) / f"started-{job.step_id}").write_text(f"{time.time()} {os.getpid()}")
    try:
        await asyncio.sleep(_sleep_s(job))
    except asyncio.CancelledError:
        (_marks(job) / f"cancelled-{job.step_id}").write_text(str(time.time()))
        raise
    (_marks(job) / f"finished-{job.step_id}").write_text(str(time.time()))
    record_completion(job, execution)
    return {"finished": True, "execution": execution}


def cancellable_sync(job: Job) -> Any:
    """Sync (runs in a thread): works in slices of 50 ms for ``sleep_s``, checking
    ``job.is_cancelled`` between slices; writes the same marks as `cancellable`."""
    execution = record_execution(job)
    (_marks(job) / f"started-{job.step_id}").write_text(f"{time.time()} {os.getpid()}")
    deadline = time.monotonic() + _sleep_s(job)
    while time.monotonic() < deadline:
        if job.is_cancelled:
            (_marks(job) / f"cancelled-{job.step_id}").write_text(str(time.time()))
            return {"gave_up": True}
        time.sleep(0.05)
    (_marks(job) / f"finished-{job.step_id}").write_text(str(time.time()))
    record_completion(job, execution)
    return {"finished": True, "execution": execution}
