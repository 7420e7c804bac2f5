"""Every command's way to the database, with nothing else: the traces, the scope, the
schema check and the pool. `warden worker` needs no more (engine/cli/worker.py); the
other commands add the engine's services on top (engine/cli/common.py with_db)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from engine.core.settings import Settings
from engine.process import tracing
from engine.process.runtime import database_url
from engine.store import Database
from engine.store.scope import across_tenants


async def with_database(settings: Settings, body: Callable[[Database], Awaitable[int]], *,
                        service: str = "warden") -> int:
    """Runs ``body`` against the database, once its schema is at this Warden's head."""
    from engine.store.migrate import require_head

    # traces only when configured (docs/deployment.md#traces); ``service`` names this
    # process's spans unless OTEL_SERVICE_NAME does
    tracing.configure(settings.traces, service=service)
    # operator commands on the host act across tenants (engine/store/scope.py); an API
    # served from here scopes each request itself (api/tenancy.py)
    across_tenants()
    with database_url(settings, announce=False) as url:
        await asyncio.to_thread(require_head, url)
        async with Database(url, max_size=4) as db:
            return await body(db)
