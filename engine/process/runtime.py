"""Process set-up shared by every entry point: which database, logging, signals."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from engine.core.errors import ConfigError
from engine.core.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


@contextmanager
def database_url(settings: Settings, *, announce: bool = True) -> Iterator[str]:
    """WARDEN_DATABASE_URL, or else the embedded server in the data folder Warden owns
    (started if needed, stopped afterwards unless another process is using it)."""
    if settings.database_url:
        yield settings.database_url
        return
    from engine.store.embedded import start_embedded  # only when needed: it starts a server

    data_dir = settings.data_dir / "pgdata"
    if announce:
        print(f"warden: no WARDEN_DATABASE_URL; using the embedded PostgreSQL in {data_dir}",
              file=sys.stderr)
    server = start_embedded(data_dir)
    try:
        yield server.url
    finally:
        server.stop()


class _JsonFormatter(logging.Formatter):
    _STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"at": self.formatTime(record), "level": record.levelname,
                               "logger": record.name, "message": record.getMessage()}
        doc.update({k: v for k, v in record.__dict__.items() if k not in self._STANDARD})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    # Neither format uses the caller's file, line or function, nor the thread or process:
    # skip collecting them for every record (the logging HOWTO's "Optimization"). A worker
    # at DEBUG writes two records per job, and the caller lookup alone (a walk of the
    # stack) was 6% of a worker's CPU in the one-step drain (bench/README.md, session 13).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for noisy in ("psycopg.pool", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def settle_heap() -> None:
    """For a long-running process (serve, worker), once its start-up is done: collect the
    start-up's garbage, then move every object still alive (modules, classes, the
    handler's imports) out of the cyclic collector's reach (``gc.freeze``), and collect
    the young generation every 10,000 allocations instead of 700.

    Each job allocates a few dozen objects the collector tracks (a task, its coroutine,
    futures, the Job), and the default threshold ran a collection every few jobs over
    everything in flight, and a full one, now and then, over every module's objects too:
    7.6% of a busy worker's CPU in the 100-step fan-out (perf), 3.5% with this
    (bench/README.md, session 19). Garbage without cycles is still freed at once by
    reference counting; only cycles wait for a collection."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def run(main: Coroutine[Any, Any, T], settings: Settings) -> T:
    """Runs a command's coroutine on the event loop WARDEN_EVENT_LOOP names.

    uvloop where it is installed (``auto``): on asyncio's loop a worker spent about a fifth
    of its own CPU on the loop's bookkeeping for each job (a task, a timer, a future, the
    socket's readiness); uvloop, which does it in C, cut the worker's CPU by a quarter
    (bench/README.md, session 16). ``asyncio`` is the way back for a platform or a
    debugger uvloop does not suit."""
    try:
        factory = event_loop_factory(settings.event_loop)
    except ConfigError:
        main.close()  # never to run: no "coroutine was never awaited" after the message
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for a WARDEN_EVENT_LOOP value; None: asyncio's own loop."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("WARDEN_EVENT_LOOP=uvloop, but uvloop is not installed "
                              "(pip install uvloop, or set it to asyncio)") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: loops finish their current pass and exit."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
