"""A loopback TCP proxy that adds network delay, optionally terminates TLS, and can drop every
connection on demand: a stand-in for the distance and faults between the bridge and a TTS host.

Each byte is forwarded `one_way_s` after it arrived, in order, in both directions, so a request
and its answer cost one extra round trip of 2 x one_way_s; a new connection's handshakes (TLS,
WebSocket) cost as many round trips as their protocols need, which is what the warm pool saves.
The TCP handshake itself is answered by the local kernel, undelayed: chain a plain delaying proxy
in front of a TLS-terminating one to delay the TLS handshake too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

_CHUNK = 65536


class DelayProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, one_way_s: float = 0.0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.one_way_s = one_way_s
        self.accept_delay_s = 0.0  # extra wait before a new connection goes anywhere
        self._tls = tls
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0
        self.bytes_up = 0  # client -> upstream, all connections: what a client sends

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._accept, host, port, ssl=self._tls)
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(client_w)
        up_w: asyncio.StreamWriter | None = None
        try:
            if self.accept_delay_s:
                await asyncio.sleep(self.accept_delay_s)
            try:
                up_r, up_w = await asyncio.open_connection(*self.upstream)
            except OSError:
                return
            self._writers.add(up_w)
            await asyncio.gather(self._pump(client_r, up_w, up=True),
                                 self._pump(up_r, client_w, up=False),
                                 return_exceptions=True)
        except asyncio.CancelledError:
            pass  # the proxy is closing; asyncio would log a cancelled connection task
        finally:
            for writer in (client_w, up_w):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                    up: bool) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                if writer.can_write_eof():
                    writer.write_eof()

        delivery = asyncio.create_task(deliver())
        try:
            while data := await reader.read(_CHUNK):
                if up:
                    self.bytes_up += len(data)
                queue.put_nowait((loop.time() + self.one_way_s, data))
        finally:
            queue.put_nowait((0.0, b""))
            with contextlib.suppress(OSError, ConnectionError):
                await delivery

    def drop_all(self) -> int:
        """Abort every open connection (both sides see a reset). Returns how many."""
        dropped = len(self._writers)
        for writer in list(self._writers):
            transport = writer.transport
            transport.abort()
        self._writers.clear()
        return dropped

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self.drop_all()
            await self._server.wait_closed()
