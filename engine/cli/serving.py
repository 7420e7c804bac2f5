"""The API and operator page beside the engine, for `warden serve` and `warden demo`:
bound early, started on the engine's loop and pool, and waited for until it answers.

The CLI is the composition root: the one engine package that may reach ``api``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from engine.core import errors
from engine.core.settings import Settings
from engine.runs.services import Services

ApiStarter = Callable[[Services, asyncio.Event], Awaitable["asyncio.Task[None]"]]
"""Starts the API and operator page on an opened engine; the task serves until the event
is set."""


def api_starter(settings: Settings, *, served_by: str = "serve") -> ApiStarter:
    """Binds WARDEN_HTTP_ADDR now, so a taken port is a clear error (exit 2) before
    anything starts, and returns what serves the API and operator page on it
    (``served_by``: "serve" or "demo", which the page says when the server stops)."""
    from api.server import bind, serve_api
    from engine.governance.apikeys import server_secret

    sock = bind(*settings.http_addr)

    async def start(svc: Services, stop: asyncio.Event) -> asyncio.Task[None]:
        return asyncio.create_task(serve_api(svc, server_secret(settings), sock, stop,
                                             served_by=served_by,
                                             anchor_dir=settings.audit_anchor_dir))

    return start


def http_base(settings: Settings) -> str:
    host, port = settings.http_addr
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def wait_ready(settings: Settings, api: asyncio.Task[None],
                     timeout_s: float = 30.0) -> None:
    """Until the API answers /readyz with 200 over real HTTP (the database answers and the
    schema is at head), or it stopped as asked. Raises what the API task died of."""
    host, port = settings.http_addr
    deadline = time.monotonic() + timeout_s
    while not await _answers_ready(host, port):
        if api.done():
            api.result()  # re-raises its error; else it was stopped (a signal)
            return
        if time.monotonic() > deadline:
            raise errors.DatabaseUnavailable(
                f"the API on {http_base(settings)} did not answer /readyz within "
                f"{timeout_s:.0f}s")
        await asyncio.sleep(0.02)


async def _answers_ready(host: str, port: int) -> bool:
    # A bare request, not urllib: an http_proxy in the environment must not be asked.
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(f"GET /readyz HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     "Connection: close\r\n\r\n".encode())
        status = await asyncio.wait_for(reader.readline(), 5.0)
        return status.split(b" ")[1:2] == [b"200"]
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def process_started() -> float:
    """When this process started, in time.monotonic() terms, so start-up times include the
    interpreter and imports. Linux only; elsewhere, now."""
    try:
        fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
        # field 22 (the 20th after the command name): start, in clock ticks since boot
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        age = 0.0
    return time.monotonic() - max(0.0, age)
