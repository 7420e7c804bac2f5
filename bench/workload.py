"""The workflows the bench runs and how it starts them: only through `engine.runs.lifecycle.start`.

Every run is started the way an API call would start it (policy gate, timeline, wake-up),
so the enqueue rate measured here is the engine's, not a bulk-insert shortcut's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from bench.children import TOPIC
from engine.definitions import workflows
from engine.governance import decisions
from engine.governance.policy import Verdict
from engine.runs import lifecycle
from engine.runs.services import Services
from engine.scheduling.scheduler import with_start_dispatch
from engine.store import Database

TENANT = "default"

# The tenant's active policy in every measurement ("timeline and policy on"): a snapshot,
# as production runs, not the process default. Both gates judge every job under it, and
# it allows the bench's steps for any input, so completions may dispatch them in SQL
# (docs/design.md#dispatch-in-the-completion).
POLICY = """
name: bench
default_decision: deny
rules:
  - name: bench-topics
    match: {topics: ["bench.*"]}
    decision: allow
    reason: the bench's no-op jobs
"""


@dataclass(frozen=True)
class Shape:
    """A workflow and how many runs of it make one measurement."""

    workflow_id: str
    steps: list[tuple[str, list[str]]]  # (step id, depends on)
    runs: int

    @property
    def jobs(self) -> int:
        return self.runs * len(self.steps)

    def source(self) -> str:
        lines = [f"id: {self.workflow_id}", f"name: bench {self.workflow_id}",
                 "version: 1.0.0", "steps:"]
        for step_id, deps in self.steps:
            lines.append(f"  {step_id}: {{type: job, topic: {TOPIC}, "
                         f"depends_on: [{', '.join(deps)}]}}")
        return "\n".join(lines) + "\n"


def one_step(runs_: int) -> Shape:
    return Shape("bench-one-step", [("only", [])], runs_)


def fan_out(runs_: int, width: int) -> Shape:
    return Shape(f"bench-fan-out-{width}", [(f"s{i:03d}", []) for i in range(width)], runs_)


def chain(runs_: int, names: str = "abcde") -> Shape:
    return Shape("bench-chain", [(n, [names[i - 1]] if i else []) for i, n in enumerate(names)],
                 runs_)


class Starter:
    """Starts runs from this process with a pool of its own (policy default: allow,
    the same as the children's)."""

    def __init__(self, url: str, concurrency: int, *, start_dispatch: bool = True) -> None:
        self.concurrency = concurrency
        # paced starts queue for the pool when the host is slow: they must wait (the rate
        # reached is reported as created_per_s), not fail the measurement after 2 s
        self.db = Database(url, min_size=concurrency, max_size=concurrency,
                           acquire_timeout=60.0)
        svc = Services.create(self.db, policy_default=Verdict.ALLOW)
        # as `warden serve` and the CLI compose it (engine/cli/common.py)
        self.svc = with_start_dispatch(svc) if start_dispatch else svc
        # every run started since the last take_started(), in start order: what a drain
        # of them waits for, by key (bench/monitor.py, wait_finished)
        self.started: list[UUID] = []

    def take_started(self) -> list[UUID]:
        """The runs started since the last call, in start order."""
        taken, self.started = self.started, []
        return taken

    async def __aenter__(self) -> Starter:
        await self.db.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.db.close()

    async def store(self, shape: Shape) -> None:
        await workflows.store(self.db, tenant_id=TENANT, source=shape.source(),
                              media_type=None, created_by="bench")
        stored = await decisions.store_bundle(self.db, tenant_id=TENANT, source=POLICY,
                                              media_type=None, created_by="bench")
        await decisions.activate(self.db, tenant_id=TENANT,
                                 snapshot_hash=stored.row.snapshot_hash, activated_by="bench")

    async def start_one(self, shape: Shape) -> None:
        started = await lifecycle.start(self.svc, tenant_id=TENANT,
                                        workflow_id=shape.workflow_id, input={},
                                        created_by="bench")
        self.started.append(started.run.run_id)

    async def start_all(self, shape: Shape) -> dict[str, Any]:
        """All runs of the shape as fast as `concurrency` lanes can start them."""
        todo: Iterator[int] = iter(range(shape.runs))

        async def lane() -> None:
            for _ in todo:  # a shared iterator: each lane takes the next run to start
                await self.start_one(shape)

        began = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(self.concurrency)))
        seconds = time.perf_counter() - began
        return {"runs": shape.runs, "jobs": shape.jobs, "concurrency": self.concurrency,
                "seconds": round(seconds, 3), "runs_per_s": round(shape.runs / seconds, 1)}

    async def start_batches(self, shape: Shape, size: int, lanes: int, *,
                            key_prefix: str = "bench") -> dict[str, Any]:
        """All runs of the shape through `lifecycle.start_many`, ``size`` runs per call
        (each with its own idempotency key), ``lanes`` calls in flight."""
        todo: Iterator[int] = iter(range(0, shape.runs, size))

        async def lane() -> None:
            for first in todo:
                items = [lifecycle.StartItem({}, f"{key_prefix}-{n}")
                         for n in range(first, min(first + size, shape.runs))]
                results = await lifecycle.start_many(
                    self.svc, tenant_id=TENANT, workflow_id=shape.workflow_id,
                    created_by="bench", items=items)
                failed = [r.error for r in results if r.error is not None]
                if failed:
                    raise RuntimeError(f"{len(failed)} items of a batch failed: {failed[0]}")
                self.started.extend(r.started.run.run_id for r in results
                                    if r.started is not None)

        began = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(lanes)))
        seconds = time.perf_counter() - began
        return {"runs": shape.runs, "jobs": shape.jobs, "batch_size": size, "lanes": lanes,
                "seconds": round(seconds, 3), "runs_per_s": round(shape.runs / seconds, 1)}

    async def start_paced(self, shape: Shape, rate: float) -> dict[str, Any]:
        """``shape.runs`` starts at a steady ``rate``: each is launched at its own time,
        so one slow start does not delay the next."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        pending: list[asyncio.Task[None]] = []
        for i in range(shape.runs):
            await asyncio.sleep(max(0.0, began + i / rate - loop.time()))
            pending.append(asyncio.create_task(self.start_one(shape)))
        await asyncio.gather(*pending)
        return {"runs": shape.runs, "target_per_s": rate,
                "seconds": round(loop.time() - began, 3)}
