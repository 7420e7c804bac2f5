"""Runs a background pass (`run_once`) forever: at once while it finds work, otherwise on a
wake-up (NOTIFY) or after the poll interval, whichever comes first. A database outage is
logged and retried with backoff; the loop itself never dies of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from engine.errors import DatabaseUnavailable

log = logging.getLogger(__name__)


async def run_forever(name: str, run_once: Callable[[], Awaitable[bool]], *,
                      wake: asyncio.Event, poll_interval_s: float,
                      stop: asyncio.Event) -> None:
    """``run_once`` returns True when it may have left work behind (run again at once)."""
    backoff = 0.1
    while not stop.is_set():
        wake.clear()
        try:
            busy = await run_once()
            backoff = 0.1
        except DatabaseUnavailable as exc:
            log.warning("%s: database unavailable (%s); retrying in %.1fs", name, exc, backoff,
                        extra={"loop": name})
            await wait_any(stop, None, backoff)
            backoff = min(backoff * 2, 5.0)
            continue
        if not busy:
            await wait_any(stop, wake, poll_interval_s)


async def wait_any(stop: asyncio.Event, wake: asyncio.Event | None, timeout: float) -> None:
    waiters = [asyncio.create_task(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.create_task(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
