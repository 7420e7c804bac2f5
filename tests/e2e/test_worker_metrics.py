"""`warden worker --metrics-port`: a worker process's own metrics, on its own port."""

from __future__ import annotations

import subprocess

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.core.enums import RunStatus
from engine.store import Database
from tests import support
from tests.e2e.processes import Processes, free_port

pytestmark = pytest.mark.anyio

FLOW = """
id: counted
name: counted
version: 1.0.0
steps:
  one: {type: job, topic: t.counted}
  two: {type: job, topic: t.counted, depends_on: [one]}
"""


async def test_a_worker_serves_its_own_metrics_and_a_taken_port_is_refused(
        db: Database, procs: Processes) -> None:
    await support.store(db, FLOW)
    port = free_port()
    procs.serve()
    procs.warden("worker", "--topic", "t.counted", "--handler", "tests.e2e.handlers:handle",
                 "--metrics-port", str(port))
    run = await support.start(db, "counted")

    async def succeeded() -> bool:
        return (await support.detail(db, run.run_id)).run.status is RunStatus.SUCCEEDED

    await support.wait_for(succeeded, timeout=30, what="the run to succeed")
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for family in text_string_to_metric_families(response.text)
               for s in family.samples}
    topic = frozenset({("topic", "t.counted")})
    # a fresh process: exactly this run's two claims and attempts
    assert samples[("warden_claim_latency_seconds_count", topic)] == 2
    assert samples[("warden_job_duration_seconds_count", topic)] == 2
    names = {name for name, _labels in samples}
    assert "warden_wakeups_total" in names and "process_cpu_seconds_total" in names
    # the database's gauges are `warden serve`'s: one scrape per worker would repeat them
    assert "warden_jobs" not in names and "warden_runs" not in names

    taken = procs.warden("worker", "--topic", "t.counted",
                         "--handler", "tests.e2e.handlers:handle", "--metrics-port", str(port))
    assert taken.wait(timeout=60) == 2
    assert f"--metrics-port: cannot listen on 127.0.0.1:{port}" in _log(procs, taken)
    wrong = procs.warden("worker", "--topic", "t.counted",
                         "--handler", "tests.e2e.handlers:handle", "--metrics-port", "70000")
    assert wrong.wait(timeout=60) == 2
    assert "--metrics-port: must be 0-65535, got 70000" in _log(procs, wrong)


def _log(procs: Processes, proc: subprocess.Popen[bytes]) -> str:
    number = procs.started.index(proc)
    [log] = procs.logs.glob(f"{number:02d}-*.log")
    return log.read_text()
