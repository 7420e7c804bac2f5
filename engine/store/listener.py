"""A LISTEN connection that survives server restarts, used only as a wake-up hint.

NOTIFY is never delivery (docs/design.md#notify-is-a-hint): after every (re)connect the
listener calls ``on_wake`` once, so its owner polls and catches up on anything sent while
it was away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

import psycopg
from psycopg import sql

from engine.core.errors import DatabaseUnavailable
from engine.store.connection import connect

log = logging.getLogger(__name__)

SCHEDULER_CHANNEL = "warden_scheduler"
JOBS_CHANNEL = "warden_jobs"
NOTIFICATIONS_CHANNEL = "warden_notifications"
# warden.send_event: an event some workflow subscribes to (docs/workflows.md#event-started-runs)
EVENT_STARTS_CHANNEL = "warden_event_starts"


class Listener:
    """LISTENs to ``channel``, and to the channels of ``also`` on the same connection (one
    LISTEN connection per process, not one per loop), calling each channel's callback."""

    def __init__(self, url: str, channel: str, on_wake: Callable[[str], None], *,
                 also: Mapping[str, Callable[[str], None]] | None = None,
                 max_backoff_s: float = 5.0) -> None:
        self.url = url
        self.handlers = {channel: on_wake, **(also or {})}
        self.channel = ", ".join(self.handlers)  # for log lines
        self.max_backoff_s = max_backoff_s
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Listens until cancelled, reconnecting with capped exponential backoff."""
        backoff = 0.1
        while True:
            try:
                await self._listen_once()
                log.warning("LISTEN %s: the connection ended; reconnecting", self.channel,
                            extra={"channel": self.channel})
                backoff = 0.1
            except (DatabaseUnavailable, psycopg.OperationalError, OSError) as exc:
                log.warning("LISTEN %s lost (%s); reconnecting in %.1fs", self.channel, exc,
                            backoff, extra={"channel": self.channel})
            except Exception as exc:
                # a dying server surfaces as other driver errors too (InterfaceError, …);
                # whatever it is, this task must not die: its owner would wait a whole
                # poll interval for every piece of work from then on
                log.warning("LISTEN %s failed (%s: %s); reconnecting in %.1fs", self.channel,
                            type(exc).__name__, exc, backoff, extra={"channel": self.channel})
            self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)

    async def _listen_once(self) -> None:
        conn = await connect(self.url)
        try:
            # one statement: one round trip, and pg_stat_activity shows every channel
            await conn.execute(sql.SQL("; ").join(
                sql.SQL("LISTEN {}").format(sql.Identifier(c)) for c in self.handlers))
            self.connected.set()
            for on_wake in self.handlers.values():
                on_wake("")  # catch up on whatever was sent while we were not listening
            async for notify in conn.notifies():
                self.handlers[notify.channel](notify.payload)
        finally:
            await conn.close()
