"""What one benchmark run measures, and the context every measurement shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.children import Children
from bench.databases import BenchDatabases

POLL_INTERVAL_MS = 100  # WARDEN_POLL_INTERVAL_MS of the children
READY_TIMEOUT_S = 60.0
IDLE_SETTLE_S = 1.0  # after the children's start-up catch-up passes: from here they idle


@dataclass(frozen=True)
class Plan:
    jobs: int
    fan_width: int
    worker_concurrency: int  # --concurrency of every `warden worker`
    enqueue_concurrency: int  # runs.start calls in flight from the bench process
    latency_rate: float
    idle_rate: float  # far below capacity: the wake-up path without a queue in front of it
    latency_seconds: float
    chains: int
    chain_rate: float
    drain_timeout_s: float
    profile_s: float | None  # None: no py-spy
    # starts dispatch their first steps in their own transaction, as `warden serve` and
    # the CLI do (False: the scheduler dispatches them, as before; for an A/B)
    start_dispatch: bool = True
    batch_size: int = 1000  # runs per start_many call in the batch-start measurement
    batch_lanes: int = 2  # start_many calls in flight

    @classmethod
    def make(cls, *, quick: bool, profile: bool, start_dispatch: bool = True) -> Plan:
        return cls(jobs=2_000 if quick else 20_000, fan_width=100, worker_concurrency=32,
                   enqueue_concurrency=8, latency_rate=200.0, idle_rate=20.0,
                   latency_seconds=5.0 if quick else 10.0, chains=50 if quick else 200,
                   chain_rate=10.0, drain_timeout_s=120.0 if quick else 600.0,
                   profile_s=(3.0 if quick else 10.0) if profile else None,
                   start_dispatch=start_dispatch)


@dataclass(frozen=True)
class Bench:
    plan: Plan
    dbs: BenchDatabases
    logs: Path

    def children(self, label: str) -> Children:
        folder = self.logs / label
        folder.mkdir(parents=True, exist_ok=True)
        return Children(self.dbs.url_as, folder, POLL_INTERVAL_MS)
