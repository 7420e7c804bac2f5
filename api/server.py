"""Serving the API inside `warden serve`, on the engine's event loop and pool."""

from __future__ import annotations

import asyncio
import contextlib

import uvicorn

from api.app import create_app
from api.ui import ui_routes
from engine.services import Services


async def serve_api(svc: Services, secret_key: bytes, host: str, port: int,
                    stop: asyncio.Event) -> None:
    """Serves until ``stop`` is set, then stops accepting and finishes open requests."""
    app = create_app(svc=svc, secret_key=secret_key, extra_routes=ui_routes())
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                            access_log=False)
    server = uvicorn.Server(config)
    # the process's own handlers set ``stop``; uvicorn must not take SIGTERM over
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopper.cancel()
    await task
