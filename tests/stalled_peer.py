"""A Twilio media stream whose peer stopped reading: it opens the stream, starts its call, keeps
sending media (so it is no silent peer), and never reads a byte after the 101, on a raw socket
with the smallest receive buffer the kernel allows. What the bridge sends it piles up in the
bridge's send queue until that is full; it never echoes a mark, nor answers a close. `cut` is
set once the bridge has dropped the connection (a send fails). For the drain's tests and
scripts/measure_drain.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.uri import parse_uri

from bridge.emulator.twilio_wire import TwilioWire, media_message

_SILENCE = base64.b64encode(b"\xff" * 160).decode()
_FRAME_S = 0.02
_MAX_HEAD = 16 * 1024


class StalledPeer:
    def __init__(self, stream_url: str, call_sid: str, parameters: dict[str, str]) -> None:
        self.stream_url = stream_url
        self.wire = TwilioWire(call_sid, None, parameters)
        self.cut = asyncio.Event()
        self._client = ClientProtocol(parse_uri(stream_url))
        self._sock = socket.socket()
        self._media: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        """Upgrade, send the opening messages and start, then media every 20 ms."""
        loop = asyncio.get_running_loop()
        url = urlsplit(self.stream_url)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel's minimum
        # A wide-area segment size: on loopback's 64 KiB one, the bridge's kernel would size
        # its send buffer at megabytes (minutes of audio) before its own queue filled.
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 88)
        self._sock.setblocking(False)
        await loop.sock_connect(self._sock, (url.hostname or "127.0.0.1", url.port or 80))
        self._client.send_request(self._client.connect())
        await self._flush()
        head = b""
        while b"\r\n\r\n" not in head:  # the bridge sends nothing after the 101 before start
            chunk = await loop.sock_recv(self._sock, 1024)
            if not chunk or len(head) > _MAX_HEAD:
                raise ConnectionError("no 101 from the bridge")
            head += chunk
        self._client.receive_data(head)
        if self._client.handshake_exc is not None:
            raise self._client.handshake_exc
        for text in (*self.wire.preamble(), self.wire.start()):
            await self._send(text)
        self._media = asyncio.create_task(self._send_media(), name="stalled-peer-media")

    async def close(self) -> None:
        if self._media is not None:
            self._media.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._media
        self._sock.close()

    async def _send_media(self) -> None:
        loop = asyncio.get_running_loop()
        start, sent = loop.time(), 0
        try:
            while True:
                await self._send(media_message(sent + 2, sent + 1, sent * 20, _SILENCE,
                                               self.wire.stream_sid))
                sent += 1
                await asyncio.sleep(start + sent * _FRAME_S - loop.time())
        except ConnectionError:  # what this peer waits for: the bridge cut it off
            self.cut.set()

    async def _send(self, text: str) -> None:
        self._client.send_text(text.encode())
        await self._flush()

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        for data in self._client.data_to_send():
            await loop.sock_sendall(self._sock, data)
