"""Handlers for the chaos tests (and tests/e2e/test_shutdown_and_cancel.py), loaded by
`warden worker` processes.

Every handler appends ``<job_id> <pid>`` to ``<marks>/executions`` when it starts, before
anything else: one line per execution, so re-executions after a crash can be counted
(``O_APPEND`` writes of one short line are atomic). ``marks`` is a directory named by the
run input. Behaviour is steered by the run input too, documented per handler.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
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


def record_execution(job: Job) -> None:
    with (_marks(job) / "executions").open("a") as out:
        out.write(f"{job.job_id} {os.getpid()}\n")


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
    record_execution(job)
    await asyncio.sleep(_sleep_s(job))
    block = float(job.input.get("block_by_attempt", {}).get(str(job.attempt), 0))
    if block:
        (_marks(job) / f"blocking-{job.job_id}").write_text(str(os.getpid()))
        time.sleep(block)
    return {"step": job.step_id, "attempt": job.attempt, "pid": os.getpid()}


async def side_effect(job: Job) -> Any:
    """Applies a side effect once per ``job.side_effect_key`` in ``chaos.side_effects``
    (INSERT … ON CONFLICT DO NOTHING), then checkpoints, then returns.

    Failpoint ``die_at`` (``after_effect`` or ``after_checkpoint``): the first execution of
    each step that gets there kills its whole process with ``os._exit`` — after the side
    effect, before the completion. Which key fired is kept in ``<marks>/fired-<step>-<run>``
    (created with O_EXCL, so it fires once per key even if attempts overlap).
    """
    record_execution(job)
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
    return {"attempt": job.attempt, "applied_now": applied_now, "resumed_from": resumed_from}


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
    record_execution(job)
    (_marks(job) / f"started-{job.step_id}").write_text(f"{time.time()} {os.getpid()}")
    try:
        await asyncio.sleep(_sleep_s(job))
    except asyncio.CancelledError:
        (_marks(job) / f"cancelled-{job.step_id}").write_text(str(time.time()))
        raise
    (_marks(job) / f"finished-{job.step_id}").write_text(str(time.time()))
    return {"finished": True}


def cancellable_sync(job: Job) -> Any:
    """Sync (runs in a thread): works in slices of 50 ms for ``sleep_s``, checking
    ``job.is_cancelled`` between slices; writes the same marks as `cancellable`."""
    record_execution(job)
    (_marks(job) / f"started-{job.step_id}").write_text(f"{time.time()} {os.getpid()}")
    deadline = time.monotonic() + _sleep_s(job)
    while time.monotonic() < deadline:
        if job.is_cancelled:
            (_marks(job) / f"cancelled-{job.step_id}").write_text(str(time.time()))
            return {"gave_up": True}
        time.sleep(0.05)
    (_marks(job) / f"finished-{job.step_id}").write_text(str(time.time()))
    return {"finished": True}
