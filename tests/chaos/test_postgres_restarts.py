"""Case 4: PostgreSQL restarts under load, the API while it is down, and LISTEN after.

Every 5-15 s the server is crashed: in turn ``pg_ctl restart -m immediate`` (back in
~0.3 s), and ``pg_ctl stop -m immediate`` then a start 1-3 s later.

Only the test cluster of tests/chaos/cluster.py is ever restarted, never a shared server.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import httpx
import pytest

from engine.runs.services import Services
from engine.store import Database
from tests import support
from tests.chaos.conftest import Chaos
from tests.chaos.harness import (
    Api,
    Deadline,
    Figures,
    audit,
    lost_runs,
    open_runs,
    query,
    retries,
    serve,
    show,
    start_api,
    wait_until,
    worker_args,
)

pytestmark = [pytest.mark.chaos, pytest.mark.anyio]

TOPIC = "chaos.restart"
HANDLER = "tests.chaos.handlers:work"
RETRY = retries(max_attempts=25, backoff_ms=200)
WORKFLOW = f"""
id: restart
name: restart
version: 1.0.0
steps:
  fetch: {{type: job, topic: {TOPIC}, retries: {RETRY}}}
  left: {{type: job, topic: {TOPIC}, depends_on: [fetch], retries: {RETRY}}}
  right: {{type: job, topic: {TOPIC}, depends_on: [fetch], retries: {RETRY}}}
"""
STEPS = ["fetch", "left", "right"]
RUNS = 300
MIN_RESTARTS = 5


@dataclass
class Submitter:
    """Starts runs through the API with an Idempotency-Key each, retrying until the engine
    answers with the run's id (acknowledged)."""

    api: Api
    marks: str
    acknowledged: dict[int, UUID] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)

    async def submit(self, client: httpx.AsyncClient, i: int, deadline: Deadline) -> None:
        body = {"input": {"marks": self.marks, "i": i, "sleep_s": [0.2, 0.8]}}
        while True:
            deadline.check(f"submitting run {i}")
            try:
                response = await client.post(
                    f"{self.api.base}/workflows/restart/runs", json=body,
                    headers={**self.api.headers(), "Idempotency-Key": f"restart-{i}"})
            except httpx.TransportError as exc:
                self.outcomes[type(exc).__name__] += 1
                await asyncio.sleep(0.2)
                continue
            self.outcomes[str(response.status_code)] += 1
            if response.status_code in (200, 201):
                self.acknowledged[i] = UUID(response.json()["run_id"])
                return
            assert response.status_code == 503, (response.status_code, response.text)
            await asyncio.sleep(0.2)


async def test_every_acknowledged_run_finishes_across_postgres_restarts(
        chaos: Chaos, svc: Services, capsys: pytest.CaptureFixture[str]) -> None:
    deadline = Deadline(200)
    rng = random.Random(5)
    await support.store(svc.db, WORKFLOW)
    await svc.db.close()  # the test's own pool would only log the restarts
    chaos.procs.env.update(WARDEN_LEASE_MS="3000", WARDEN_POLL_INTERVAL_MS="500")
    api, engine_proc = await start_api(chaos.procs, chaos.url)
    workers = [chaos.procs.warden(*worker_args([TOPIC], HANDLER, concurrency=8))
               for _ in range(2)]
    submitter = Submitter(api, str(chaos.marks))
    restarts_at: list[float] = []
    submitted = asyncio.Event()

    async def restart_storm() -> None:
        while True:
            await asyncio.sleep(rng.uniform(5, 15))
            if (len(restarts_at) >= MIN_RESTARTS and submitted.is_set()
                    and await open_runs(chaos.url, deadline) == 0):
                return
            restarts_at.append(time.time())
            if len(restarts_at) % 2:  # pg_ctl restart -m immediate: back in ~0.3 s
                await asyncio.to_thread(chaos.cluster.restart, "immediate")
            else:  # a crash (stop -m immediate) that keeps the server down a while
                await asyncio.to_thread(chaos.cluster.outage, rng.uniform(1.0, 3.0))

    async def submit_all() -> None:
        async with httpx.AsyncClient(timeout=40) as client:
            for first in range(0, RUNS, 3):  # ~5 runs/s: the submissions span restarts
                await asyncio.gather(*(submitter.submit(client, i, deadline)
                                       for i in range(first, min(first + 3, RUNS))))
                await asyncio.sleep(0.5)
        submitted.set()

    storm = asyncio.create_task(restart_storm())
    try:
        await submit_all()
        await asyncio.wait_for(storm, timeout=deadline.left())
    finally:
        storm.cancel()

    run_ids = list(submitter.acknowledged.values())
    seen = await audit(chaos.url, chaos.marks, run_ids, STEPS, deadline)
    [(stored_runs,)] = await query(chaos.url, "SELECT count(*) FROM warden.runs",
                                   deadline=deadline)
    spans: list[tuple[datetime, datetime]] = [
        (created, finished) for created, finished in await query(
            chaos.url, "SELECT created_at, finished_at FROM warden.runs", deadline=deadline)]
    recovered = sum(1 for created, finished in spans if finished is not None and any(
        created.timestamp() < at < finished.timestamp() for at in restarts_at))
    [(broken,)] = await query(chaos.url, "SELECT count(*) FROM warden.runs "
                                         "WHERE NOT warden.verify_timeline(run_id)")
    figures = seen.figures(len(run_ids), recovered, restarts=len(restarts_at),
                           api=",".join(f"{k}:{v}" for k, v in
                                        sorted(submitter.outcomes.items())))
    show(capsys, "postgres_restarts", figures)

    assert len(restarts_at) >= MIN_RESTARTS
    assert len(run_ids) == RUNS
    seen.assert_clean()
    assert stored_runs == RUNS  # a retried POST never started a second run
    assert broken == 0
    assert "500" not in submitter.outcomes
    # engine and workers lived through it, and listen again
    assert engine_proc.poll() is None and all(w.poll() is None for w in workers)

    async def listening() -> list[tuple[str, int]] | None:
        rows = await query(chaos.url, """
            SELECT query, count(*)::int FROM pg_stat_activity
             WHERE datname = current_database() AND query ILIKE 'LISTEN %%'
             GROUP BY 1 ORDER BY 1""")
        found = [(str(q), int(n)) for q, n in rows]
        return found if found == [
            ('LISTEN "warden_jobs"', 2),  # the workers
            ('LISTEN "warden_scheduler"; LISTEN "warden_notifications"; '
             'LISTEN "warden_event_starts"', 1),  # serve
        ] else None

    await wait_until(listening, deadline, "the LISTEN connections to come back", timeout=15)


@dataclass
class Probe:
    path: str
    sent: float
    down: bool  # sent while the server was down
    outcome: str = "pending"
    took: float = 0.0


async def test_the_api_answers_503_not_500_while_postgres_is_down(
        chaos: Chaos, svc: Services, capsys: pytest.CaptureFixture[str]) -> None:
    """Probes /readyz and a keyed GET every 0.25 s before, during and after an 8 s outage.
    While the server is down each must be answered 503 promptly: not 500, and not left
    hanging until the server is back."""
    deadline = Deadline(90)
    await support.store(svc.db, WORKFLOW)
    run = await support.start(svc, "restart", {"marks": str(chaos.marks)})
    await svc.db.close()
    api, engine_proc = await start_api(chaos.procs, chaos.url)
    paths = ("/readyz", f"/workflow-runs/{run.run_id}")
    probes: list[Probe] = []
    down = False

    async def probe(client: httpx.AsyncClient, path: str) -> None:
        sent = Probe(path, time.monotonic(), down)
        probes.append(sent)
        try:
            response = await client.get(f"{api.base}{path}", headers=api.headers())
            sent.outcome = str(response.status_code)
        except httpx.TransportError as exc:
            sent.outcome = type(exc).__name__
        sent.took = time.monotonic() - sent.sent

    async with httpx.AsyncClient(timeout=10) as client:
        tasks: list[asyncio.Task[None]] = []

        async def probe_for(seconds: float) -> None:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                tasks.extend(asyncio.create_task(probe(client, p)) for p in paths)
                await asyncio.sleep(0.25)

        await probe_for(1.5)
        await asyncio.to_thread(chaos.cluster.stop_server, "immediate")
        down = True
        await probe_for(8)
        down = False
        await asyncio.to_thread(chaos.cluster.start_server)
        up_at = time.monotonic()

        async def ready_again() -> bool:
            response = await client.get(f"{api.base}/readyz")
            return response.status_code == 200

        await wait_until(ready_again, deadline, "/readyz to answer 200 again", timeout=30)
        recovered_after = time.monotonic() - up_at
        await asyncio.gather(*tasks)

    during = [p for p in probes if p.down]
    outcomes = Counter(f"{'down' if p.down else 'up'}:{p.outcome}" for p in probes)
    # a probe sent just before the server came back may be answered 200 by then: that is
    # the server working, not a broken promise. The promise: 503 or success, promptly.
    late = [p for p in during if p.outcome not in ("503", "200") or p.took > 3]
    figures = Figures(acknowledged=1, lost=0, duplicated_completions=0, re_executions=0,
                      recovered=1, extra={
                          "probes": ",".join(f"{k}:{v}" for k, v in sorted(outcomes.items())),
                          "slowest_down_probe_s": round(max(p.took for p in during), 1),
                          "ready_again_after_s": round(recovered_after, 1)})
    show(capsys, "api_while_postgres_down", figures)

    assert not [p for p in probes if p.outcome == "500"], outcomes
    assert engine_proc.poll() is None
    assert all(p.outcome == "200" for p in probes if not p.down and p.sent < up_at - 8), outcomes
    assert not late, (f"{len(late)} of {len(during)} probes sent while PostgreSQL was down got "
                      f"no prompt 503 or 200 (answer within 3 s): "
                      + ", ".join(f"{p.path} {p.outcome} after {p.took:.1f}s" for p in late[:6]))
    assert {p.path for p in during if p.outcome == "503"} == set(paths), outcomes


async def test_listeners_reconnect_and_catch_up_on_what_they_missed(
        chaos: Chaos, svc: Services, capsys: pytest.CaptureFixture[str]) -> None:
    """With a poll interval far longer than the test (60 s), only NOTIFY and the catch-up
    poll after a LISTEN reconnect can start work. A run created after a restart, while no
    LISTEN connection exists yet (its NOTIFY reaches nobody), must still run at once."""
    deadline = Deadline(120)
    await support.store(svc.db, WORKFLOW)
    chaos.procs.env.update(WARDEN_POLL_INTERVAL_MS="60000")
    serve(chaos.procs)
    chaos.procs.warden(*worker_args([TOPIC], HANDLER, concurrency=4))
    marks = str(chaos.marks)

    async def listeners() -> int:
        [(n,)] = await query(chaos.url, "SELECT count(*) FROM pg_stat_activity WHERE "
                                        "datname = current_database() AND query ILIKE 'LISTEN %%'")
        return int(n)

    async def both_listening() -> bool:
        return await listeners() == 2

    async def finished(run_id: UUID) -> bool:
        return await lost_runs(chaos.url, [run_id], deadline) == {}

    await wait_until(both_listening, deadline, "serve and worker to LISTEN", timeout=30)
    warm = (await support.start(svc, "restart", {"marks": marks})).run_id
    await wait_until(lambda: finished(warm), deadline, "a run to finish by NOTIFY", timeout=10)

    missed: UUID | None = None
    for _ in range(3):  # until a run is created while nobody listens
        await wait_until(both_listening, deadline, "serve and worker to LISTEN", timeout=30)
        await asyncio.to_thread(chaos.cluster.stop_server, "immediate")
        await asyncio.sleep(3)  # the listeners back off meanwhile
        await asyncio.to_thread(chaos.cluster.start_server)
        async with Database(chaos.url, max_size=1) as fresh:  # no pool backoff to wait out
            run_id = (await support.start(fresh, "restart", {"marks": marks})).run_id
        if await listeners() == 0:
            missed = run_id
            break
    assert missed is not None, "could not create a run while the listeners were away"
    started = time.monotonic()
    await wait_until(lambda: finished(missed), deadline,
                     "the run created while nobody listened to finish", timeout=20)
    took = time.monotonic() - started
    runs = [warm, missed]
    seen = await audit(chaos.url, chaos.marks, runs, STEPS, deadline)
    figures = seen.figures(len(runs), 1, caught_up_in_s=round(took, 1), poll_interval_s=60)
    show(capsys, "listen_catch_up", figures)
    seen.assert_clean()
