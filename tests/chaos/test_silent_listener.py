"""Case 6: a silent LISTEN connection. NOTIFY is a hint, never delivery
(docs/design.md#notify-is-a-hint).

Engine and worker reach the test cluster through a proxy that, once both LISTEN, turns
their LISTEN connections into black holes (open, healthy-looking, silent), so no NOTIFY
arrives and no error tells them. Jobs must still start within the poll interval: each hop
(run created → job dispatched by the scheduler, job dispatched → claimed by the worker)
is bounded by one poll interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from uuid import UUID

import pytest

from engine.runs.services import Services
from tests import support
from tests.chaos.conftest import Chaos
from tests.chaos.harness import (
    Deadline,
    audit,
    lost_runs,
    query,
    serve,
    show,
    wait_until,
    worker_args,
)
from tests.chaos.proxy import SilencingProxy

pytestmark = [pytest.mark.chaos, pytest.mark.anyio]

TOPIC = "chaos.quiet"
POLL_S = 1.0
SLACK_S = 0.75  # a pass of the scheduler or a claim, on a busy 2-vCPU machine
WORKFLOW = f"""
id: quiet
name: quiet
version: 1.0.0
steps:
  only: {{type: job, topic: {TOPIC}}}
"""


@pytest.fixture
async def proxy(chaos: Chaos) -> AsyncIterator[SilencingProxy]:
    started = await SilencingProxy(chaos.cluster.socket_path).start()
    try:
        yield started
    finally:
        await started.close()


async def _hops(url: str, run_id: UUID) -> tuple[float, float]:
    """Seconds from run.created to job.dispatched, and from there to job.claimed."""
    rows = await query(url, "SELECT kind, min(at) FROM warden.timeline WHERE run_id = %s "
                            "AND kind IN ('run.created', 'job.dispatched', 'job.claimed') "
                            "GROUP BY kind", [run_id])
    at: dict[str, datetime] = dict(rows)
    return ((at["job.dispatched"] - at["run.created"]).total_seconds(),
            (at["job.claimed"] - at["job.dispatched"]).total_seconds())


async def test_jobs_start_within_the_poll_interval_when_listen_goes_silent(
        chaos: Chaos, svc: Services, proxy: SilencingProxy,
        capsys: pytest.CaptureFixture[str]) -> None:
    deadline = Deadline(90)
    await support.store(svc.db, WORKFLOW)
    through_proxy = {"WARDEN_DATABASE_URL": proxy.url("warden_chaos"),
                     "WARDEN_POLL_INTERVAL_MS": str(int(POLL_S * 1000))}
    serve(chaos.procs, **through_proxy)
    chaos.procs.warden(*worker_args([TOPIC], "tests.chaos.handlers:work", concurrency=4),
                       **through_proxy)
    marks = str(chaos.marks)

    async def both_listening() -> bool:
        return proxy.listeners == 2

    await wait_until(both_listening, deadline, "serve and worker to LISTEN", timeout=30)

    acknowledged: list[UUID] = []

    async def run_and_time(count: int) -> list[tuple[float, float]]:
        run_ids = []
        for _ in range(count):
            run_ids.append((await support.start(svc, "quiet", {"marks": marks})).run_id)
            acknowledged.append(run_ids[-1])
            await asyncio.sleep(0.37)  # land anywhere in the poll cycle

        async def all_done() -> bool:
            return await lost_runs(chaos.url, run_ids, deadline) == {}

        await wait_until(all_done, deadline, "the runs to finish", timeout=30)
        return [await _hops(chaos.url, r) for r in run_ids]

    with_notify = await run_and_time(3)
    proxy.silence_listeners()
    silent = await run_and_time(8)

    worst = max(max(h) for h in silent)
    seen = await audit(chaos.url, chaos.marks, acknowledged, ["only"], deadline)
    figures = seen.figures(
        len(acknowledged), len(silent),
        worst_hop_with_notify_s=round(max(max(h) for h in with_notify), 2),
        worst_hop_silent_s=round(worst, 2), poll_interval_s=POLL_S,
        notify_bytes_dropped=proxy.dropped)
    show(capsys, "silent_listener", figures)

    assert proxy.dropped > 0, "no NOTIFY reached the black hole: the test proved nothing"
    assert proxy.listeners == 2  # still the same, silent connections: nobody noticed
    assert len(acknowledged) == 11
    assert await query(chaos.url, "SELECT count(*) FROM warden.runs") == [(11,)]
    seen.assert_clean()
    assert worst <= POLL_S + SLACK_S, silent
