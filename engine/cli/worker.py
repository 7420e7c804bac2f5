"""`warden worker`: the Python worker of the job protocol. It needs the database and
nothing of the engine's services, and imports no more (engine/cli/main.py loads a
command's module only when it runs): the other commands' imports were about a third of a
worker's start (bench/README.md, session 19)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from engine.cli.database import with_database
from engine.core import errors
from engine.core.settings import Settings
from engine.process.runtime import configure_logging, settle_heap, stop_on_signals
from engine.store import Database


def _load_handler(spec: str) -> Callable[..., Any]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise errors.InvalidInput("--handler", f"expected module:function, got {spec!r}")
    try:
        handler = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise errors.InvalidInput("--handler", f"cannot load {spec!r}: {exc}") from exc
    if not callable(handler):
        raise errors.InvalidInput("--handler", f"{spec!r} is not callable")
    return handler  # type: ignore[no-any-return]


async def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from engine.worker.runner import Worker, WorkerConfig

    configure_logging(settings)
    if args.concurrency < 1:
        raise errors.InvalidInput("--concurrency", "must be at least 1")
    handler = _load_handler(args.handler)
    stop = asyncio.Event()
    stop_on_signals(stop)
    config = WorkerConfig(topics=tuple(args.topic), concurrency=args.concurrency,
                          lease_s=settings.lease_s, poll_interval_s=settings.poll_interval_s,
                          shutdown_timeout_s=args.shutdown_timeout,
                          **({"name": args.name} if args.name else {}))

    async def body(db: Database) -> int:
        print(f"warden worker {config.name}: topics {', '.join(config.topics)}",
              file=sys.stderr, flush=True)
        settle_heap()
        await Worker(db, handler, config).run(stop)
        return 0

    with _metrics_server(args.metrics_host, args.metrics_port):
        return await with_database(settings, body, service="warden-worker")


@contextmanager
def _metrics_server(host: str, port: int | None) -> Iterator[None]:
    """A worker has no API: with --metrics-port, its own counters and histograms (claim
    latency, job durations, wake-ups) get an HTTP endpoint of their own. The database's
    gauges stay on `warden serve`'s /metrics, so they are not scraped once per worker."""
    if port is None:
        yield
        return
    if not 0 <= port <= 65535:
        raise errors.InvalidInput("--metrics-port", f"must be 0-65535, got {port}")
    from engine.process import metrics

    try:
        server, thread = metrics.serve_http(host, port)
    except OSError as exc:
        raise errors.InvalidInput("--metrics-port", f"cannot listen on {host}:{port}: "
                                                    f"{exc.strerror}") from exc
    print(f"warden worker: metrics on http://{host}:{server.server_port}/metrics",
          file=sys.stderr, flush=True)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
