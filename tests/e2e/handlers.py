"""Handlers for the end-to-end tests, loaded by `warden worker` processes.

Behaviour is steered by the run input, per step id:
``{"behave": {"<step>": {"sleep_s": 0.5, "fail_attempts": 1, "hang_after_checkpoint": true}},
   "marks": "/tmp/dir"}`` (``"<step>[i]"`` steers item i of a for_each step). Every
execution appends a line to ``<marks>/executions``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from engine.worker.runner import Job


async def handle(job: Job) -> Any:
    # an item of a for_each step is steered by "<step>[i]" (its job id without @attempt)
    key = job.side_effect_key.split(":", 1)[1]
    steer = job.input.get("behave", {})
    behave = steer.get(key, steer.get(job.step_id, {}))
    marks = Path(job.input["marks"]) if "marks" in job.input else None
    if marks is not None:
        with (marks / "executions").open("a") as log:
            log.write(f"{job.job_id} {os.getpid()}\n")
    if behave.get("hang_after_checkpoint") and job.checkpoint is None:
        await job.save_checkpoint({"progress": "half", "pid": os.getpid()})
        assert marks is not None
        (marks / f"hanging-{key}").write_text(str(os.getpid()))
        await asyncio.sleep(3600)  # the test SIGKILLs this process here
    await asyncio.sleep(float(behave.get("sleep_s", 0)))
    if job.attempt <= int(behave.get("fail_attempts", 0)):
        raise RuntimeError(f"planned failure of attempt {job.attempt}")
    return {"step": job.step_id, "attempt": job.attempt, "resumed_from": job.checkpoint,
            "side_effect_key": job.side_effect_key}
