"""Opening the engine for an API process that owns its database connection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from engine.core.settings import load
from engine.governance.apikeys import server_secret
from engine.governance.policy import Verdict
from engine.process.runtime import database_url
from engine.runs.services import Services
from engine.scheduling.scheduler import with_start_dispatch
from engine.store import Database


@asynccontextmanager
async def open_services() -> AsyncIterator[tuple[Services, bytes]]:
    settings = load()
    with database_url(settings) as url:
        async with Database(url, max_size=10) as db:
            yield (with_start_dispatch(Services.create(
                       db, policy_default=Verdict(settings.policy_default),
                       approval_expires_ms=settings.approval_expires_ms,
                       event_keep_ms=settings.event_keep_ms)),
                   server_secret(settings))
