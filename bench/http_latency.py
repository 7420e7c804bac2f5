"""Request latency on a reused HTTP connection: `python bench/http_latency.py [--requests N]`.

Starts a real `warden serve` on a bench database (created and dropped here, like
`bench/run.py`'s), then sends N sequential ``GET /healthz`` on ONE keep-alive connection
(the way every real client reuses its connection) and, for comparison, N on a fresh
connection each. Prints one JSON document with p50/p99/max in milliseconds.

A server whose small writes wait for the client's delayed ACK (Nagle) shows ~40 ms per
request on the reused connection and ~1 ms on fresh ones; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import pg
from bench.children import Children
from bench.databases import BenchDatabases
from bench.latency import percentiles
from bench.plan import POLL_INTERVAL_MS, READY_TIMEOUT_S

PATH = "/healthz"


def _get(conn: http.client.HTTPConnection) -> float:
    began = time.perf_counter()
    conn.request("GET", PATH)
    response = conn.getresponse()
    response.read()
    took = time.perf_counter() - began
    if response.status != 200:
        raise RuntimeError(f"GET {PATH} answered {response.status}")
    return took


def measure(host: str, port: int, requests: int) -> dict[str, Any]:
    """Sequential GETs: all on one kept-alive connection, then each on its own."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        _get(conn)  # connects; the first request is not the reused-connection case
        reused = [_get(conn) for _ in range(requests)]
    finally:
        conn.close()
    fresh = []
    for _ in range(requests):
        one = http.client.HTTPConnection(host, port, timeout=10)
        try:
            fresh.append(_get(one))
        finally:
            one.close()
    return {"reused_connection": percentiles(reused), "fresh_connection": percentiles(fresh)}


async def run(requests: int) -> dict[str, Any]:
    dbs = BenchDatabases.for_this_process()
    logs = Path(tempfile.mkdtemp(prefix="warden-bench-http-"))
    try:
        await dbs.prepare()
        await dbs.fresh_seed()
        url = await dbs.fresh(from_seed=True)
        conn = await pg.connect(url)
        try:
            with Children(dbs.url_as, logs, POLL_INTERVAL_MS) as kids:
                serve = kids.serve()
                await kids.wait_ready(conn, READY_TIMEOUT_S)
                assert serve.http_addr is not None  # a serve always has its API's address
                host, port = serve.http_addr
                result = await asyncio.to_thread(measure, host, port, requests)
        finally:
            await conn.close()
    finally:
        await dbs.drop_all()
        shutil.rmtree(logs, ignore_errors=True)
    return {"benchmark": "warden-http-latency", "path": PATH, **result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200,
                        help="sequential requests per connection kind (default 200)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.requests)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
