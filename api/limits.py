"""Bounds request bodies, answering with the same problem document as every other error.

A body declared too large (Content-Length) is refused before any of it is read; a body
that grows past the limit while streaming is cut off by raising a 413 HTTPException from
``receive``, which the app's exception handler renders. (Starlette's own ``max_body_size``
sits outside user middleware and answers the declared case in plain text.)
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body_size: int) -> None:
        self.app = app
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_size:
                await self._refuse(send, int(value))
                return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_size:
                    raise HTTPException(413, f"the body passed the limit of "
                                             f"{self.max_body_size} bytes")
            return message

        await self.app(scope, bounded, send)

    async def _refuse(self, send: Send, declared: int) -> None:
        body = json.dumps({
            "type": "https://warden.dev/problems/too-large", "title": "Too large",
            "status": 413,
            "detail": f"the body is {declared} bytes; the limit is {self.max_body_size}",
        }).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
