"""The socket `warden serve` and `warden demo` answer on (api/server.py).

A connection the API accepted must have TCP_NODELAY: without it a client reusing its
keep-alive connection waits for its own delayed ACK (~40 ms) on every request after the
first, because the response leaves in two writes (bench/http_latency.py measures it).
The option is read from the server's side of a real connection served by `serve_api`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

import pytest

from api.server import bind, serve_api
from engine.governance.policy import Verdict
from engine.runs.services import Services
from engine.store import Database
from tests.api.conftest import SECRET

pytestmark = pytest.mark.anyio


def _accepted_socket_nodelay(server: tuple[str, int], client: tuple[str, int]) -> int:
    """TCP_NODELAY of this process's socket whose ends are ``server`` and ``client``
    (the connection uvicorn accepted), read through a duplicate of its descriptor."""
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            dup = os.dup(int(name))
            with socket.socket(fileno=dup) as sock:
                if sock.type != socket.SOCK_STREAM:
                    continue
                if sock.getsockname()[:2] == server and sock.getpeername()[:2] == client:
                    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    raise AssertionError(f"no accepted socket {server} <- {client} in this process")


async def test_accepted_connections_have_tcp_nodelay(db_url: str) -> None:
    sock = bind("127.0.0.1", 0)
    server_addr = sock.getsockname()[:2]
    stop = asyncio.Event()
    async with Database(db_url) as db:
        svc = Services.create(db, policy_default=Verdict.ALLOW)
        task = asyncio.create_task(serve_api(svc, SECRET, sock, stop))
        try:
            reader, writer = await asyncio.open_connection(*server_addr)
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
                await writer.drain()
                status = await asyncio.wait_for(reader.readline(), 10)
                assert status.startswith(b"HTTP/1.1 200"), status
                client_addr = writer.get_extra_info("sockname")[:2]
                assert _accepted_socket_nodelay(server_addr, client_addr) != 0
            finally:
                writer.close()
                await writer.wait_closed()
        finally:
            stop.set()
            await task
