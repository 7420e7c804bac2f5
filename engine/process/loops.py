"""Runs a background pass (`run_once`) forever: at once while it finds work, otherwise on a
wake-up (NOTIFY) or after the poll interval, whichever comes first. A database outage is
logged and retried with backoff; the loop itself never dies of it.

Every wait is counted by what ended it (`engine.process.metrics.woke`): a NOTIFY that never wakes
anyone shows as polls doing all the work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from engine.core.errors import DatabaseUnavailable
from engine.process import metrics
from engine.process.metrics import NOTIFY, POLL, STOP

log = logging.getLogger(__name__)


class Wake(asyncio.Event):
    """An Event that remembers why it was set first since it was last cleared, for waiters
    that are woken by more than NOTIFY (a worker also wakes when a job frees a slot)."""

    cause: str = NOTIFY

    def set(self, cause: str = NOTIFY) -> None:
        if not self.is_set():
            self.cause = cause
        super().set()


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
            metrics.woke(name, await wait_any(stop, wake, poll_interval_s))


async def wait_any(stop: asyncio.Event, wake: asyncio.Event | None, timeout: float) -> str:
    """Waits for ``stop``, ``wake`` or the timeout; returns what ended the wait: STOP, the
    wake-up's cause (NOTIFY unless a `Wake` says otherwise), or POLL."""
    waiters = [asyncio.create_task(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.create_task(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    if stop.is_set():
        return STOP
    if wake is not None and wake.is_set():
        return wake.cause if isinstance(wake, Wake) else NOTIFY
    return POLL
