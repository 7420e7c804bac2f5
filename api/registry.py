"""Routes declared once with what the OpenAPI document needs to describe them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.governance.apikeys import Role

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # under /api/v1, with {params}
    summary: str
    handler: Handler
    roles: tuple[Role, ...]  # empty: no key needed
    request: str | None = None  # component schema name of the body
    request_media: tuple[str, ...] = ("application/json",)
    responses: dict[int, str | None] = field(default_factory=dict)  # status -> schema
    query: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()



ENDPOINTS: list[Endpoint] = []


def routes(prefix: str, endpoints: list[Endpoint]) -> list[Route]:
    """One route per path, answering every method the path has: Starlette matches the
    first route whose path fits, so one route per (path, method) would answer OPTIONS or
    an unknown method with only that route's methods in `Allow`."""
    by_path: dict[str, dict[str, Handler]] = {}
    for ep in endpoints:
        by_path.setdefault(ep.path, {})[ep.method] = ep.handler
    return [_route(prefix + path, handlers) for path, handlers in by_path.items()]


def _route(path: str, handlers: dict[str, Handler]) -> Route:
    if len(handlers) == 1:
        [(method, handler)] = handlers.items()
        return Route(path, handler, methods=[method], name=handler.__name__)

    async def by_method(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method  # the Route allows
        return await handlers[method](request)  # only the methods it was given (and HEAD)

    return Route(path, by_method, methods=list(handlers),
                 name="_".join(h.__name__ for h in handlers.values()))


def endpoint(method: str, path: str, summary: str, *, roles: tuple[Role, ...] = (),
             request: str | None = None, request_media: tuple[str, ...] = ("application/json",),
             responses: dict[int, str | None] | None = None, query: tuple[str, ...] = (),
             headers: tuple[str, ...] = ()) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ENDPOINTS.append(Endpoint(method, path, summary, handler, roles, request, request_media,
                                  responses or {200: None}, query, headers))
        return handler

    return register


READ_RUNS = (Role.SUBMITTER, Role.APPROVER, Role.OPERATOR)
READ_JOBS = (Role.OPERATOR, Role.WORKER, Role.APPROVER)
