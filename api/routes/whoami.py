"""Who the presented key is: what the operator page shows and greys out by."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import authorize
from api.http import query
from api.registry import endpoint
from engine.governance.apikeys import Role

ANY_ROLE = tuple(Role)


@endpoint("GET", "/whoami", "The key's principal (the actor it is recorded as), roles and "
          "tenants, and the tenant of this call", roles=ANY_ROLE, responses={200: "Whoami"})
async def whoami(request: Request) -> Response:
    caller = await authorize(request, *ANY_ROLE)
    query(request, set())
    p = caller.principal
    return JSONResponse({"principal": p.name, "key_id": p.key_id,
                         "roles": sorted(r.value for r in p.roles),
                         "tenants": sorted(p.tenants), "tenant": caller.tenant_id})
