"""One pgqueuer worker process of the bench's peer (`python -m bench.peer_worker`).

Runs ``--consumers`` pgqueuer consumers (a `PgQueuer` each, on its own asyncpg connection,
as pgqueuer's own benchmark runs them) on the peer database, on uvloop as pgqueuer's own
CLI does, until SIGTERM. Entrypoints:

- ``noop``: does nothing (the drain and enqueue → pick-up shapes);
- ``chain``: the payload is the step number; a step below ``--chain-length`` enqueues the
  next one before returning (the 5-step chain: each job enqueues the next).

With ``--record FILE`` every job's ``updated - created`` is kept (both database times:
``created`` is set by the enqueue, ``updated`` by the pick) and written to FILE as JSON
at exit, per step number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections import defaultdict
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import uvloop
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver, AsyncpgPoolDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries

BATCH_SIZE = 10  # pgqueuer's default dequeue batch, and its benchmark's


async def serve(args: argparse.Namespace) -> None:
    settings = {"application_name": args.name}
    recorded: dict[int, list[float]] = defaultdict(list)
    # the chain's enqueues come from a pool, as a handler in a real pgqueuer app would
    pool = await asyncpg.create_pool(dsn=args.url, min_size=1, max_size=args.consumers,
                                     server_settings=settings)
    enqueue = Queries(AsyncpgPoolDriver(pool)).enqueue
    consumers: list[PgQueuer] = []
    for _ in range(args.consumers):
        conn = await asyncpg.connect(dsn=args.url, server_settings=settings)
        pgq = PgQueuer(AsyncpgDriver(conn))

        @pgq.entrypoint("noop")
        async def noop(job: Job) -> None:
            if args.record:
                recorded[0].append((job.updated - job.created).total_seconds())

        @pgq.entrypoint("chain")
        async def chain(job: Job) -> None:
            step = int(job.payload or b"1")
            if args.record:
                recorded[step].append((job.updated - job.created).total_seconds())
            if step < args.chain_length:
                await enqueue("chain", str(step + 1).encode(), 0)

        consumers.append(pgq)

    def stop() -> None:
        for pgq in consumers:
            pgq.shutdown.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        await asyncio.gather(*(pgq.run(batch_size=args.batch_size) for pgq in consumers))
    finally:
        await pool.close()
        if args.record:
            Path(args.record).write_text(json.dumps(recorded))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the peer database (postgresql://)")
    parser.add_argument("--name", required=True, help="application_name of the connections")
    parser.add_argument("--consumers", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--chain-length", type=int, default=5)
    parser.add_argument("--record", help="write the jobs' pick-up latencies here at exit")
    uvloop.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
