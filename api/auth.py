"""Who is calling, for which tenant, and may they: X-API-Key and X-Tenant-ID.

Every route but health, metrics and the OpenAPI document needs a key, reads included:
runs and timelines carry tenant data. A key acts only for the tenants it was granted;
another tenant's objects answer 404 through the engine's tenant-scoped queries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.requests import Request

from engine.core.errors import NotFound, WardenError
from engine.governance.apikeys import Principal, Role, authenticate
from engine.store.scope import set_tenant

TENANT_HEADER = "X-Tenant-ID"
DEFAULT_TENANT = "default"
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Unauthenticated(WardenError):
    """No key, or a key that is malformed, unknown or revoked (401)."""


class NotAllowed(WardenError):
    """The key lacks the role, or the tenant was not granted to it (403)."""


@dataclass(frozen=True)
class Caller:
    principal: Principal
    tenant_id: str

    @property
    def actor(self) -> str:
        return self.principal.name


async def authorize(request: Request, *roles: Role) -> Caller:
    """The caller, if its key holds one of ``roles`` (admin holds them all) for the tenant."""
    presented = request.headers.get("X-API-Key")
    if not presented:
        raise Unauthenticated("missing X-API-Key header")
    state = request.app.state
    principal = await authenticate(state.svc.db, state.secret_key, presented)
    if principal is None:
        raise Unauthenticated("invalid or revoked API key")
    if any("\x00" in value for value in request.path_params.values()):
        # no stored id can hold U+0000, so the path names nothing (and never reaches SQL)
        raise NotFound("no such object")
    tenant = request.headers.get(TENANT_HEADER, DEFAULT_TENANT)
    if not _TENANT.match(tenant):
        raise NotAllowed(f"{TENANT_HEADER} {tenant[:70]!r} is not a valid tenant id")
    if tenant not in principal.tenants:
        raise NotAllowed(f"this key is not granted tenant {tenant!r}")
    if Role.ADMIN not in principal.roles and not principal.roles.intersection(roles):
        wanted = ", ".join(sorted(r.value for r in roles))
        raise NotAllowed(f"this key lacks a role for this call (one of: {wanted})")
    set_tenant(tenant)  # row-level security: this request sees this tenant's rows only
    return Caller(principal, tenant)
