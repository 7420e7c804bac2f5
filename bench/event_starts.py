"""Event-started runs under `warden serve`: ``python bench/event_starts.py [--events N]``.

Prints one JSON document. Two workflows subscribe to one event name; the bench sends N
events through `engine.runs.events.send` (one transaction each) with two `warden serve`
processes running, then waits until every (event, workflow) is handled. Reported: the send
rate with subscribers (each send also NOTIFYs the loop) and without (a name nobody
subscribes to), how long after each event's receipt its run was created, and that no
event started a workflow twice.
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
from engine.runs import events
from engine.runs.services import Services
from engine.store import Database
from engine.store.scope import across_tenants


def _subscriber(workflow_id: str) -> str:
    return f"""
id: {workflow_id}
name: {workflow_id}
version: 1.0.0
on_event:
  - name: bench.opened
    input: {{n: "${{event.data.n}}"}}
steps:
  nap: {{type: sleep, duration_ms: 3600000}}
"""


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, int) else round(float(v), 1) for k, v in row.items()}


async def _send(svc: Services, name: str, count: int, prefix: str) -> float:
    began = time.monotonic()
    for i in range(count):
        await events.send(svc, tenant_id="default", event_id=f"{prefix}-{i}", name=name,
                          key=f"k-{i}", data={"n": i}, sent_by="bench")
    return round(count / (time.monotonic() - began), 1)


async def main(count: int, admin_url: str, timeout_s: float = 300) -> dict[str, object]:
    across_tenants()
    dbs = BenchDatabases.for_this_process(admin_url)
    await dbs.prepare()
    try:
        url = await dbs.fresh(from_seed=False)
        async with Database(url, max_size=4) as db:
            svc = Services.create(db, policy_default=Verdict.ALLOW)
            for workflow_id in ("bench-a", "bench-b"):
                await workflows.store(db, tenant_id="default", source=_subscriber(workflow_id),
                                      media_type=None, created_by="bench")
            conn = await pg.connect(url)
            with tempfile.TemporaryDirectory() as logs, \
                    Children(dbs.url_as, Path(logs), poll_interval_ms=1000) as children:
                children.serve()
                children.serve()
                unsubscribed = await _send(svc, "bench.ignored", count, "i")
                subscribed = await _send(svc, "bench.opened", count, "e")
                deadline = time.monotonic() + timeout_s
                while (await pg.one(conn, "event_starts_count"))["handled"] < 2 * count:
                    children.check_alive()
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"events not all handled after {timeout_s}s")
                    await asyncio.sleep(0.2)
                lag = await pg.one(conn, "event_starts_lag")
            await conn.close()
        return {"events": count, "subscribers": 2, "serves": 2,
                "sent_per_s": {"subscribed": subscribed, "unsubscribed": unsubscribed},
                "started": _rounded(dict(lag))}
    finally:
        await dbs.drop_all()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--admin-url", default=admin_url())
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.events, args.admin_url)), indent=2))
