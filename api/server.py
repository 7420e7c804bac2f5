"""Serving the API and the operator page inside `warden serve`, on the engine's event loop
and pool."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import uvicorn

from api.app import create_app
from api.ui import ui_routes
from engine.core.errors import ConfigError
from engine.runs.services import Services


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a taken port is a clear error (uvicorn would
    exit the whole process from inside its task)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: accepted connections inherit the protocol number, and
    # asyncio sets TCP_NODELAY only on sockets that say they are TCP. Without it a client
    # reusing its keep-alive connection waited ~40 ms per request (Nagle against the
    # client's delayed ACK: the response leaves in two writes, head then body).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} (WARDEN_HTTP_ADDR): "
                          f"{exc.strerror}") from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def serve_api(svc: Services, secret_key: bytes, sock: socket.socket,
                    stop: asyncio.Event, *, served_by: str = "serve",
                    anchor_dir: Path | None = None) -> None:
    """Serves until ``stop`` is set, then stops accepting and finishes open requests."""
    app = create_app(svc=svc, secret_key=secret_key, anchor_dir=anchor_dir,
                     extra_routes=ui_routes(served_by=served_by))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    # the process's own handlers set ``stop``; uvicorn must not take SIGTERM over
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopper.cancel()
    await task
