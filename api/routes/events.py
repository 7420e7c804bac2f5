"""Events for wait_event steps (docs/workflows.md#events)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import authorize
from api.http import json_body, json_object
from api.registry import endpoint
from engine.core.errors import InvalidInput
from engine.governance.apikeys import Role
from engine.runs import events, views

SEND = (Role.SUBMITTER, Role.OPERATOR, Role.ADMIN)


@endpoint("POST", "/events", "Send an event to the wait_event steps waiting (or about to "
          "wait) for its name and key; the same id again is the same event",
          roles=SEND, request="Event",
          responses={200: "EventStored", 201: "EventStored", 409: "Problem", 422: "Problem"})
async def send_event(request: Request) -> Response:
    caller = await authorize(request, *SEND)
    body = json_object(await json_body(request), {"id", "name", "key", "data"})
    for field in ("id", "name", "key"):
        if field not in body:
            raise InvalidInput(field, f"missing required field {field!r}")
    sent = await events.send(request.app.state.svc, tenant_id=caller.tenant_id,
                             event_id=body["id"], name=body["name"], key=body["key"],
                             data=body.get("data"), sent_by=caller.actor)
    return JSONResponse(views.sent_event(sent.event, replayed=not sent.created),
                        status_code=201 if sent.created else 200)
