"""Measurement 5 (``--growth``): is the hot path flat under growth?

One database, one `warden serve` and one `warden worker` running throughout. A round is
a drain of ``runs`` one-step runs started in batches while the children run (jobs/s from
the first start to the last run finished) and enqueue → claim at the idle rate (p50/p99).
Rounds are measured: on the empty tables; after ``history_jobs`` finished jobs and
``events_per_job`` timeline events per job are loaded (then ANALYZE: this server runs
with autovacuum off); and while another session holds a transaction open (a REPEATABLE
READ snapshot: vacuum can remove no tuple that died after it), rounds back to back for
``hold_s`` seconds, first and last reported. Every figure is also given relative to the
empty round (the issue asks for within 20%). Each round also gives the WAL its drain
wrote per job and the full-page images in it (pg_stat_wal), which is where a growing
index costs first.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bench import monitor, pg
from bench.plan import IDLE_SETTLE_S, READY_TIMEOUT_S, Bench
from bench.workload import Starter, one_step


@dataclass(frozen=True)
class GrowthPlan:
    runs: int  # per drain round
    history_jobs: int
    events_per_job: int
    hold_s: float
    latency_runs: int  # enqueue → claim samples per round, at the idle rate
    load_chunk: int = 50_000  # history rows per INSERT statement


async def growth(bench: Bench, plan: GrowthPlan, progress: Any) -> dict[str, Any]:
    url = await bench.dbs.fresh(from_seed=False)
    conn = await pg.connect(url)
    holder = await pg.connect(url)
    shape = one_step(plan.runs)
    out: dict[str, Any] = {"plan": plan.__dict__}
    try:
        async with Starter(url, bench.plan.batch_lanes,
                           start_dispatch=bench.plan.start_dispatch) as starter:
            await starter.store(shape)
            with bench.children("growth") as kids:
                kids.serve()
                kids.worker(bench.plan.worker_concurrency)
                await kids.wait_ready(conn, READY_TIMEOUT_S)
                await asyncio.sleep(IDLE_SETTLE_S)
                rounds = _Rounds(bench, starter, conn, kids.check_alive, plan)
                out["empty"] = await rounds.one("empty")
                progress(f"growth, empty tables: {_line(out['empty'])}")
                began = time.monotonic()
                left = plan.history_jobs
                while left > 0:
                    n = min(plan.load_chunk, left)
                    await pg.rows(conn, "growth_history", {
                        "runs": n, "events": plan.events_per_job,
                        "workflow_id": shape.workflow_id})
                    left -= n
                await pg.execute(conn, "growth_analyze")
                out["history_load_s"] = round(time.monotonic() - began, 1)
                out["history"] = {**await rounds.one("history"),
                                  **await pg.one(conn, "growth_sizes")}
                progress(f"growth, with history: {_line(out['history'])}")
                await pg.execute(holder, "growth_hold")
                held = await pg.one(holder, "growth_hold_snapshot")
                held_since = time.monotonic()
                during: list[dict[str, Any]] = []
                while not during or time.monotonic() - held_since < plan.hold_s:
                    during.append(await rounds.one(f"held-{len(during)}"))
                    progress(f"growth, transaction held {time.monotonic() - held_since:.0f}"
                             f" s: {_line(during[-1])}")
                out["held"] = {"held_s": round(time.monotonic() - held_since, 1),
                               "held_xid": held["xid"], "rounds": len(during),
                               "first": during[0], "last": during[-1],
                               **await pg.one(conn, "growth_sizes")}
                await pg.execute(holder, "growth_release")
    finally:
        await holder.close()
        await conn.close()
    out["relative_to_empty"] = _relative(out)
    return out


class _Rounds:
    def __init__(self, bench: Bench, starter: Starter, conn: pg.Conn, check: Any,
                 plan: GrowthPlan) -> None:
        self.bench, self.starter, self.conn, self.check = bench, starter, conn, check
        self.runs, self.latency_runs = plan.runs, plan.latency_runs
        self.n = 0

    async def one(self, label: str) -> dict[str, Any]:
        plan = self.bench.plan
        loop = asyncio.get_running_loop()
        self.n += 1
        shape = one_step(self.runs)
        wal = await pg.one(self.conn, "growth_wal")
        began = loop.time()
        await self.starter.start_batches(shape, plan.batch_size, plan.batch_lanes,
                                         key_prefix=f"growth-{self.n}")
        # by key, the runs this round started: never a walk of what an old snapshot keeps
        left = await monitor.wait_finished(self.conn, self.starter.take_started(),
                                           deadline=began + plan.drain_timeout_s,
                                           check=self.check)
        drain_s = loop.time() - began
        wal_after = await pg.one(self.conn, "growth_wal")
        since: datetime = (await pg.one(self.conn, "db_now"))["now"]
        await self.starter.start_paced(one_step(self.latency_runs), plan.idle_rate)
        await monitor.wait_finished(self.conn, self.starter.take_started(),
                                    deadline=loop.time() + plan.drain_timeout_s,
                                    check=self.check)
        latency = await pg.one(self.conn, "growth_claim_latency", {"since": since})
        return {"label": label, "drained": left == 0,
                "jobs_per_s": round(shape.jobs / drain_s, 1) if left == 0 else None,
                "claim_p50_ms": _ms(latency["p50_ms"]), "claim_p99_ms": _ms(latency["p99_ms"]),
                # what the drain wrote to the WAL per job, and how many whole pages of it:
                # an index insert into a page not yet written since the last checkpoint
                # writes the whole page (docs/design.md#run-ids)
                "wal_kb_per_job": round((wal_after["bytes"] - wal["bytes"]) / shape.jobs / 1024, 1),
                "full_pages_per_job": round((wal_after["fpi"] - wal["fpi"]) / shape.jobs, 2)}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _line(r: dict[str, Any]) -> str:
    return (f"{r['jobs_per_s']} jobs/s, claim p50 {r['claim_p50_ms']} ms, "
            f"p99 {r['claim_p99_ms']} ms, WAL {r['wal_kb_per_job']} KB a job "
            f"({r['full_pages_per_job']} full pages)")


def _relative(out: dict[str, Any]) -> dict[str, Any]:
    base = out.get("empty", {})
    rel: dict[str, Any] = {}
    for name, r in (("history", out.get("history")),
                    ("held_first", out.get("held", {}).get("first")),
                    ("held_last", out.get("held", {}).get("last"))):
        if not r:
            continue
        rel[name] = {k: round(r[k] / base[k], 3) if r.get(k) and base.get(k) else None
                     for k in ("jobs_per_s", "claim_p50_ms", "claim_p99_ms", "wal_kb_per_job")}
    return rel
