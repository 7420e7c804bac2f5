"""Timers and event waits under `warden serve`: ``python bench/flow.py [--runs N]``.

Prints one JSON document. ``timers``: N runs each sleep until one shared fire time a few
seconds ahead (database time), with two `warden serve` processes; reported is how long
after its fire time each sleep step succeeded (``finished_at - wake_at``: the reaper's
wake-up, the scheduler's pass and the commit), and that each fired exactly once.
``events``: N runs wait on their own key; the bench sends the N events through
`engine.runs.events.send` (one transaction each); reported is how long after each
event's receipt its wait succeeded, and the send rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a plain script

from bench import pg
from bench.children import Children
from bench.databases import BenchDatabases, admin_url
from engine.definitions import workflows
from engine.governance.policy import Verdict
from engine.runs import events, lifecycle
from engine.runs.services import Services
from engine.store import Database
from engine.store.scope import across_tenants

TIMER = """
id: bench-timer
name: sleep until
version: 1.0.0
steps:
  nap: {type: sleep, until: "${input.at}"}
"""
WAIT = """
id: bench-wait
name: wait for an event
version: 1.0.0
steps:
  wait: {type: wait_event, event: bench.done, key: "${input.key}"}
"""


async def _until_none_open(conn: pg.Conn, step_type: str, children: Children,
                           timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while (await pg.one(conn, "flow_open_steps", {"type": step_type}))["open"]:
        children.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{step_type} steps still open after {timeout_s}s")
        await asyncio.sleep(0.2)


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, int) else round(float(v), 1) for k, v in row.items()}


async def main(runs: int, admin_url: str) -> dict[str, object]:
    across_tenants()
    dbs = BenchDatabases.for_this_process(admin_url)
    await dbs.prepare()
    try:
        url = await dbs.fresh(from_seed=False)
        async with Database(url, max_size=4) as db:
            svc = Services.create(db, policy_default=Verdict.ALLOW)
            for source in (TIMER, WAIT):
                await workflows.store(db, tenant_id="default", source=source,
                                      media_type=None, created_by="bench")
            conn = await pg.connect(url)
            fire_at = (await pg.one(conn, "flow_fire_at"))["at"]
            for _ in range(runs):
                await lifecycle.start(svc, tenant_id="default", workflow_id="bench-timer",
                                      input={"at": fire_at}, created_by="bench")
            for i in range(runs):
                await lifecycle.start(svc, tenant_id="default", workflow_id="bench-wait",
                                      input={"key": f"k-{i}"}, created_by="bench")
            with tempfile.TemporaryDirectory() as logs, \
                    Children(dbs.url_as, Path(logs), poll_interval_ms=1000) as children:
                children.serve()
                children.serve()
                await _until_none_open(conn, "sleep", children)
                timers = await pg.one(conn, "flow_timer_lag")
                began = time.monotonic()
                for i in range(runs):
                    await events.send(svc, tenant_id="default", event_id=f"e-{i}",
                                      name="bench.done", key=f"k-{i}", data={"i": i},
                                      sent_by="bench")
                sent_s = time.monotonic() - began
                await _until_none_open(conn, "wait_event", children)
                waits = await pg.one(conn, "flow_wait_lag")
            await conn.close()
        return {"runs": runs, "serves": 2, "timers": _rounded(dict(timers)),
                "events": {"sent_per_s": round(runs / sent_s, 1), **_rounded(dict(waits))}}
    finally:
        await dbs.drop_all()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--admin-url", default=admin_url())
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.runs, args.admin_url)), indent=2))
