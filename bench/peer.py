"""The peer: pgqueuer measured in the same run, on the same server, with the same shapes.

pgqueuer (pinned in the `bench` extra: ``pip install -e '.[bench]'``) gets databases of its
own, ``warden_bench_<pid>_pgqueuer`` and ``…_pgqueuer_seed``, created and dropped by the
bench, so its schema never touches Warden's. Its workers are real processes
(bench/peer_worker.py: ``consumers`` pgqueuer consumers each, asyncpg, uvloop, pgqueuer's
default ``durable`` tables) started and stopped like Warden's children.

How the shapes map (a Warden worker process ↔ a pgqueuer worker process):

- drain: the jobs of a Warden shape are enqueued the way the shape's runs are started
  (one enqueue call per run: a one-step run is one job, a 100-step fan-out run is one
  call of 100 jobs, a chain run is its first step), ``enqueue_concurrency`` calls in
  flight; each process count then drains its own clone of that queue, timed from
  spawning the processes until the queue table is empty (polled every 0.2 s, as
  Warden's unfinished runs are).
- chain: each job enqueues the next step before it returns (5 steps).
- enqueue → pick-up: one job per enqueue call at a fixed rate against idle workers;
  latency = the job's ``updated`` (set by the pick) - ``created`` (set by the enqueue).
- step → step: 5-step chains started at the chain rate; latency of steps 2..5 from the
  enqueue by the previous step's handler to the pick.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from bench import monitor, pg
from bench.drain import _backend_cpu, _delta, _per_job
from bench.latency import percentiles
from bench.plan import IDLE_SETTLE_S, READY_TIMEOUT_S, Bench
from bench.workload import Shape

CONSUMERS = 10  # per process: the "2 processes x 10 consumers" pgqueuer is compared at
CHAIN_LENGTH = 5


def missing() -> str | None:
    """Why the peer cannot run here, or None."""
    try:
        import asyncpg  # type: ignore[import-untyped]  # noqa: F401
        import pgqueuer  # noqa: F401
        import uvloop  # noqa: F401
    except ImportError as exc:
        return (f"{exc.name} is not installed: pip install -e '.[bench]' "
                "(or run with --no-peer)")
    return None


def facts() -> dict[str, Any]:
    return {"name": "pgqueuer", "version": metadata.version("pgqueuer"),
            "driver": f"asyncpg {metadata.version('asyncpg')}", "event_loop": "uvloop",
            "consumers_per_process": CONSUMERS, "batch_size": _batch_size(),
            "durability": "durable (pgqueuer's default: every table logged)"}


def _batch_size() -> int:
    from bench.peer_worker import BATCH_SIZE
    return BATCH_SIZE


@dataclass(frozen=True)
class PeerDatabases:
    admin_url: str
    name: str

    @classmethod
    def beside(cls, bench: Bench) -> PeerDatabases:
        return cls(bench.dbs.admin_url, f"{bench.dbs.name}_pgqueuer")

    @property
    def seed(self) -> str:
        return f"{self.name}_seed"

    @property
    def url(self) -> str:
        return pg.with_database(self.admin_url, self.name)

    async def fresh_seed(self) -> str:
        """An empty database with pgqueuer's schema installed; returns its URL."""
        await self._admin("database_drop", database=self.seed)
        await self._admin("database_create_empty", database=self.seed)
        url = pg.with_database(self.admin_url, self.seed)
        queries, conn = await _queries(url)
        try:
            await queries.install()
        finally:
            await conn.close()
        return url

    async def fresh(self) -> str:
        """The measurement database, a clone of the seed."""
        await self._admin("database_drop", database=self.name)
        await self._admin("database_create", database=self.name, template=self.seed)
        return self.url

    async def drop_all(self) -> None:
        for database in (self.name, self.seed):
            await self._admin("database_drop", database=database)

    async def _admin(self, statement: str, /, **identifiers: str) -> None:
        conn = await pg.connect(self.admin_url)
        try:
            await pg.ddl(conn, statement, **identifiers)
        finally:
            await conn.close()


async def _queries(url: str) -> tuple[Any, Any]:
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(dsn=url)
    return Queries(AsyncpgDriver(conn)), conn


class Enqueuer:
    """pgqueuer enqueue calls from the bench process, ``lanes`` connections in flight."""

    def __init__(self, url: str, lanes: int) -> None:
        self.url, self.lanes = url, lanes
        self.pool: Any = None

    async def __aenter__(self) -> Enqueuer:
        import asyncpg
        from pgqueuer.db import AsyncpgPoolDriver
        from pgqueuer.queries import Queries

        self.pool = await asyncpg.create_pool(dsn=self.url, min_size=self.lanes,
                                              max_size=self.lanes)
        self.queries = Queries(AsyncpgPoolDriver(self.pool))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.close()

    async def one_run(self, shape: Shape) -> None:
        """What starting one run of ``shape`` enqueues: its root steps."""
        if shape.workflow_id == "bench-chain":
            await self.queries.enqueue("chain", b"1", 0)
            return
        width = len(shape.steps)
        await self.queries.enqueue(["noop"] * width, [None] * width, [0] * width)

    async def all_runs(self, shape: Shape) -> dict[str, Any]:
        todo = iter(range(shape.runs))

        async def lane() -> None:
            for _ in todo:
                await self.one_run(shape)

        began = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(self.lanes)))
        seconds = time.perf_counter() - began
        return {"runs": shape.runs, "jobs": shape.jobs, "concurrency": self.lanes,
                "seconds": round(seconds, 3), "runs_per_s": round(shape.runs / seconds, 1)}

    async def batches(self, shape: Shape, size: int, lanes: int) -> dict[str, Any]:
        """The root jobs of ``shape.runs`` runs, ``size`` runs' worth per enqueue call."""
        width = 1 if shape.workflow_id == "bench-chain" else len(shape.steps)
        entrypoint = "chain" if shape.workflow_id == "bench-chain" else "noop"
        todo = iter(range(0, shape.runs, size))

        async def lane() -> None:
            for first in todo:
                n = (min(first + size, shape.runs) - first) * width
                await self.queries.enqueue([entrypoint] * n, [None] * n, [0] * n)

        began = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(lanes)))
        seconds = time.perf_counter() - began
        return {"runs": shape.runs, "jobs": shape.jobs, "batch_size": size, "lanes": lanes,
                "seconds": round(seconds, 3), "runs_per_s": round(shape.runs / seconds, 1)}

    async def paced(self, shape: Shape, rate: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        began = loop.time()
        pending: list[asyncio.Task[None]] = []
        for i in range(shape.runs):
            await asyncio.sleep(max(0.0, began + i / rate - loop.time()))
            pending.append(asyncio.create_task(self.one_run(shape)))
        await asyncio.gather(*pending)
        return {"runs": shape.runs, "target_per_s": rate,
                "seconds": round(loop.time() - began, 3)}


async def enqueue(bench: Bench, peer: PeerDatabases, shape: Shape) -> dict[str, Any]:
    """The shape's runs enqueued once into the peer's seed, as Warden's are into its own."""
    url = await peer.fresh_seed()
    async with Enqueuer(url, bench.plan.enqueue_concurrency) as enqueuer:
        return await enqueuer.all_runs(shape)


async def batch_start(bench: Bench, peer: PeerDatabases, shape: Shape) -> dict[str, Any]:
    """The shape's root jobs enqueued in calls of ``batch_size`` runs' worth."""
    url = await peer.fresh_seed()
    async with Enqueuer(url, bench.plan.batch_lanes) as enqueuer:
        return await enqueuer.batches(shape, bench.plan.batch_size, bench.plan.batch_lanes)


async def drain(bench: Bench, peer: PeerDatabases, shape: Shape, *,
                processes: int) -> dict[str, Any]:
    """``processes`` pgqueuer workers drain a clone of the seed."""
    url = await peer.fresh()
    conn = await pg.connect(url)
    loop = asyncio.get_running_loop()
    try:
        await pg.try_execute(conn, "checkpoint")
        before = await pg.one(conn, "db_counters")
        began = loop.time()
        with bench.children(f"peer-{shape.workflow_id}-{processes}p") as kids:
            for _ in range(processes):
                kids.peer(url, ["--consumers", str(CONSUMERS)])
            for child in kids.started:  # inside the clock, as Warden's wait_ready is
                await _wait_connected(conn, child.name, kids.check_alive)
            ready_s = loop.time() - began
            left = await monitor.wait_drained(conn, deadline=began + bench.plan.drain_timeout_s,
                                              check=kids.check_alive, query="peer_queued")
            drain_s = loop.time() - began
            cpu = {**kids.cpu_seconds(), **await _backend_cpu(conn)}
        await pg.wait_for_backends_gone(conn)
        after = await pg.one(conn, "db_counters")
    finally:
        await conn.close()
    done = left == 0
    return {"processes": processes, "consumers_per_process": CONSUMERS,
            "runs": shape.runs, "jobs": shape.jobs, "drained": left == 0, "jobs_left": left,
            "drain_s": round(drain_s, 3), "startup_s": round(ready_s, 3),
            "jobs_per_s": round(shape.jobs / drain_s, 1) if done else None,
            "runs_per_s": round(shape.runs / drain_s, 1) if done else None,
            "per_job": _per_job(_delta(after, before), shape.jobs),
            "cpu_s": {name: round(s, 2) for name, s in cpu.items()}}


async def latency(bench: Bench, peer: PeerDatabases, shape: Shape,
                  rate: float) -> dict[str, Any]:
    """One pgqueuer process, idle-waiting; ``shape.runs`` runs enqueued at ``rate``/s.
    The latencies are the jobs' own ``updated - created``, kept by the worker."""
    await peer.fresh_seed()
    url = await peer.fresh()
    record = bench.logs / f"peer-latency-{shape.workflow_id}-{rate:g}.json"
    conn = await pg.connect(url)
    loop = asyncio.get_running_loop()
    try:
        async with Enqueuer(url, bench.plan.enqueue_concurrency) as enqueuer:
            with bench.children(f"peer-latency-{shape.workflow_id}-{rate:g}") as kids:
                kids.peer(url, ["--consumers", str(CONSUMERS), "--record", str(record)])
                await _wait_connected(conn, kids.started[0].name, kids.check_alive)
                await asyncio.sleep(IDLE_SETTLE_S)
                started = await enqueuer.paced(shape, rate)
                left = await monitor.wait_drained(
                    conn, deadline=loop.time() + bench.plan.drain_timeout_s,
                    check=kids.check_alive, query="peer_queued")
            # stopped: the worker wrote its record on the way out
    finally:
        await conn.close()
    by_step = {int(k): v for k, v in json.loads(record.read_text()).items()}
    # step → step: steps 2.. (each enqueued by the previous step's handler); otherwise all
    samples = [s for step, v in by_step.items() if step != 1 for s in v]
    return {"processes": 1, "consumers_per_process": CONSUMERS, "starts": started,
            "drained": left == 0, "latency": percentiles(samples)}


async def _wait_connected(conn: pg.Conn, name: str, check: Any) -> None:
    """Until the worker holds its consumers' connections (then the bench lets it settle)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT_S
    while True:
        check()
        held = {r["application_name"]: r["n"] for r in await pg.rows(conn, "peer_connections")}
        if held.get(name, 0) >= CONSUMERS:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"{name} holds {held.get(name, 0)} connections after "
                               f"{READY_TIMEOUT_S}s")
        await asyncio.sleep(0.05)

