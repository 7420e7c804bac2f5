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

    def route(self, prefix: str) -> Route:
        return Route(prefix + self.path, self.handler, methods=[self.method],
                     name=self.handler.__name__)


ENDPOINTS: list[Endpoint] = []


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
