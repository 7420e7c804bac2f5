"""A handler's run on one job (engine/worker/runner.py `_Work`): an async handler runs in
the job's own task, and the heartbeat's stop reaches the handler only while it runs, never
the recording of its result."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from engine.worker.runner import Job, _Work


def _job() -> Job:
    return Job(job_id="r:s@1", run_id="r", step_id="s", attempt=1, topic="t", input={},
               upstream={}, constraints={}, checkpoint=None, tenant_id="default",
               save_checkpoint=lambda state: None)


def test_an_async_handler_runs_in_the_jobs_own_task() -> None:
    async def main() -> None:
        seen: list[asyncio.Task[Any] | None] = []

        async def handler(job: Job) -> str:
            seen.append(asyncio.current_task())
            return "done"

        work = _Work(handler, _job(), is_async=True)
        assert await work.run() == "done"
        assert seen == [asyncio.current_task()]

    asyncio.run(main())


def test_stop_cancels_an_async_handler_while_it_runs() -> None:
    async def main() -> None:
        entered = asyncio.Event()

        async def handler(job: Job) -> None:
            entered.set()
            await asyncio.sleep(60)

        work = _Work(handler, _job(), is_async=True)

        async def stop_once_entered() -> None:
            await entered.wait()
            work.stop()

        stopper = asyncio.create_task(stop_once_entered())
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(work.run(), timeout=5)
        await stopper

    asyncio.run(main())


def test_stop_after_the_handler_returned_leaves_the_task_alone() -> None:
    async def main() -> None:
        async def handler(job: Job) -> int:
            return 7

        work = _Work(handler, _job(), is_async=True)
        assert await work.run() == 7
        work.stop()  # a heartbeat that learns of a lost lease only now
        # the job's task goes on recording the result: nothing cancels this wait
        await asyncio.sleep(0.01)
        current = asyncio.current_task()
        assert current is not None and current.cancelling() == 0

    asyncio.run(main())


def test_stop_gives_up_waiting_for_a_sync_handler_which_sees_is_cancelled() -> None:
    async def main() -> None:
        job = _job()
        release = threading.Event()
        saw: list[bool] = []

        def handler(job: Job) -> None:
            release.wait(5)
            saw.append(job.is_cancelled)

        work = _Work(handler, job, is_async=False)
        running = asyncio.create_task(work.run())
        await asyncio.sleep(0.05)
        job.cancelled.set()
        work.stop()
        with pytest.raises(asyncio.CancelledError):
            await running
        release.set()
        await asyncio.sleep(0.05)  # the thread finishes on its own
        assert saw == [True]

    asyncio.run(main())
