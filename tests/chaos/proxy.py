"""A tiny TCP proxy on 127.0.0.1 in front of the test cluster's unix socket, that can
silence the LISTEN connections only.

A connection is a listener once the client sent ``LISTEN`` on it. ``silence_listeners()``
turns every listener connection into a black hole, both ways, without closing it: the
engine sees a healthy, quiet socket, and NOTIFYs are dropped on the floor (counted in
``dropped``). Other connections go on as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class _Link:
    listener: bool = False


@dataclass
class SilencingProxy:
    socket_path: str
    host: str = "127.0.0.1"
    port: int = 0
    silenced: bool = False
    dropped: int = 0  # bytes from the server to silenced listeners, never delivered
    links: list[_Link] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> SilencingProxy:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}?sslmode=disable"

    @property
    def listeners(self) -> int:
        return sum(1 for link in self.links if link.listener)

    def silence_listeners(self) -> None:
        self.silenced = True

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_unix_connection(self.socket_path)
        except OSError:
            client_w.close()
            return
        link = _Link()
        self.links.append(link)
        for task in (self._pump(client_r, server_w, link, upstream=True),
                     self._pump(server_r, client_w, link, upstream=False)):
            running = asyncio.create_task(task)
            self._tasks.add(running)
            running.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    link: _Link, *, upstream: bool) -> None:
        try:
            while data := await reader.read(65536):
                if upstream and b"LISTEN " in data:
                    link.listener = True
                if link.listener and self.silenced:
                    if not upstream:
                        self.dropped += len(data)
                    continue  # the black hole: read, never forward
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
