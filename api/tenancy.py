"""Every request starts with no tenant scope: row-level security then shows it no row
until `api.auth.authorize` scopes it to its caller's tenant (engine/store/scope.py).

Whatever scope the serving process's own task has (the CLI's, the engine loops' '*'),
a request never inherits it: a route that reached tenant data before authorizing would
fail closed instead of reading every tenant.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from engine.store.scope import scoped


class NoTenantScope:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with scoped(""):
            await self.app(scope, receive, send)
