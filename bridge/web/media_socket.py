"""A provider's media stream socket: data messages go straight to a callback, inside the read.

A provider sends 50 media messages a second per call. Through aiohttp's `receive()` each one
resolves a future, wakes the handler's task and climbs an async iterator: at hundreds of calls
that bookkeeping costs more than handling the message. So once a stream is admitted, the socket
leaves aiohttp and this asyncio protocol owns it, with public APIs only:

- aiohttp routes and admits the upgrade as any request (access middleware, signature, stream
  token; refusals are ordinary aiohttp responses, before the 101). The handler then takes the
  connection over with `request.transport` and asyncio's `transport.set_protocol`, and hands
  the connection's end back to aiohttp's protocol (`connection_lost`), so aiohttp finishes the
  request as one whose client went away.
- websockets' sans-I/O `ServerProtocol` (https://websockets.readthedocs.io/en/stable/howto/sansio.html)
  checks the handshake and writes the 101, answers pings, runs the close handshake and fails
  the connection on any protocol error or oversize message.
- Its parser is pure Python, about 9 µs a frame: more than the task wake-up it replaces. So the
  common frame (one whole masked text or binary frame, under 64 KiB) is unmasked (with the
  masking function websockets' parser uses) and handed to the callback here; any other frame
  (control, fragment, big, malformed) is fed to websockets whole, frame by frame, and once the
  connection is closing, everything is.
  websockets therefore always parses from a frame boundary. Outgoing text frames are framed
  here too (`text_frame`); websockets frames pongs and the close.

With `coalescing`, once media flows the socket asks the kernel to wake its reader only when
about `coalescing.messages` messages wait (SO_RCVLOWAT, honoured by Linux's epoll for TCP): a
provider sends a message every 20 ms without pause, so each read then takes several for the
cost of one wake-up, one read() and one entry here (at 400 calls, 2 a read took the bridge from
74-79% of a core to 66-68%), while each message waits at most (messages - 1) x 20 ms. The mark
is raised at the first message the size of 20 ms of audio (before, a peer may send one message
and wait: the handshake, "connected"), and lowered back to 1 byte when the connection leaves
OPEN (a close handshake's answer is a few bytes) or when the shared sweep
(bridge/web/read_coalescing.py) finds the socket unread for a sweep: a peer that stopped with a
small message unread gets it read within 0.2 s.

A peer that goes silent (no read for `inactivity_timeout_s`; bridge/web/inactivity.py decides)
is gone: `on_inactive` is told and the connection is dropped without a close handshake, which
nobody would answer. Each read only sets a flag; one timer per socket checks it a few times per
timeout.

Bytes a client sends before the 101 (RFC 6455 4.1 forbids it) stay with aiohttp and are lost.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterable
from typing import cast

import structlog
from aiohttp import web
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from bridge.web.inactivity import Inactivity
from bridge.web.read_coalescing import ReadCoalescing

try:  # websockets' C extension for masking, what its own frame parser uses
    from websockets.speedups import apply_mask
except ImportError:  # no wheel with it for this platform: its pure Python twin
    from websockets.utils import apply_mask

OnMessage = Callable[[str | bytes], None]
OnInactive = Callable[[], None]
CLOSE_TIMEOUT_S = 10.0  # for the peer's close frame, as aiohttp's WebSocketResponse waits
# First bytes of the frames handled here: FIN, no RSV bits (no extension is negotiated), text
# or binary. The second byte must have the mask bit: a client's frames are always masked.
_FAST_TEXT, _FAST_BINARY = 0x81, 0x82
_MASKED = 0x80
_DATA = (Opcode.TEXT, Opcode.BINARY)
MAX_LOW_WATER = 8192  # bytes: whatever a provider's message size, no read waits for more
# The smallest media message: 160 bytes of audio are 216 characters of base64, with JSON round.
MEDIA_MESSAGE_BYTES = 256
log = structlog.get_logger("bridge.web")


def request_head(raw_path: str, raw_headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The upgrade request as it came (aiohttp has read it), for websockets' handshake."""
    lines = [b"GET " + raw_path.encode("utf-8", "surrogateescape") + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in raw_headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def frame_extent(data: bytes, pos: int) -> tuple[int, int] | None:
    """(header bytes, payload bytes) of the frame starting at `pos` (RFC 6455 5.2); None while
    its header is incomplete."""
    available = len(data) - pos
    if available < 2:
        return None
    second = data[pos + 1]
    length = second & 0x7F
    head = 6 if second & _MASKED else 2
    if length == 126:
        head += 2
        if available < 4:
            return None
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
    elif length == 127:
        head += 8
        if available < 10:
            return None
        length = int.from_bytes(data[pos + 2:pos + 10], "big")
    if available < head:
        return None
    return head, length


def text_frame(payload: bytes) -> bytes:
    """One unmasked FIN text frame (RFC 6455 5.2; a server never masks, 5.1)."""
    n = len(payload)
    if n < 126:
        return bytes((_FAST_TEXT, n)) + payload
    if n < 0x10000:
        return bytes((_FAST_TEXT, 126)) + n.to_bytes(2, "big") + payload
    return bytes((_FAST_TEXT, 127)) + n.to_bytes(8, "big") + payload


class HandshakeRefused(Exception):
    """The upgrade request is no valid WebSocket handshake: answer `response` instead."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


class MediaSocket(asyncio.Protocol):
    """`on_message` is called synchronously with every text (str) or binary (bytes) message,
    `on_inactive` once the peer has been silent for `inactivity_timeout_s` (0: never).
    `accept` takes the connection over from aiohttp; `send`, `close` and `wait_closed` are
    what a call needs."""

    def __init__(self, on_message: OnMessage, *, max_size: int,
                 inactivity_timeout_s: float = 0.0,
                 coalescing: ReadCoalescing | None = None) -> None:
        self.on_message = on_message
        self._coalescing = coalescing
        # The mark is to be raised at the next media message (never when reads take one).
        self._armed = coalescing is not None and coalescing.messages > 1
        self._coalesced = False  # the socket's low-water mark is raised
        self._read_recently = False  # for the sweep
        self.on_inactive: OnInactive = lambda: None
        self._inactivity_timeout_s = inactivity_timeout_s
        self._inactivity: Inactivity | None = None  # from the 101 on
        self._inactivity_timer: asyncio.TimerHandle | None = None
        self._read = False  # set by every read, cleared by the inactivity check
        self._max_size = min(max_size, 0xFFFF)  # bigger frames go to websockets
        # No extensions (so no compression), no subprotocol, no origin check.
        self._ws = ServerProtocol(max_size=max_size)
        # websockets' state is OPEN: a copy, as its `state` is a property (a call per message
        # read), kept by _flush, which follows everything that can change it.
        self._open = False
        self._transport: asyncio.Transport | None = None
        self._aiohttp: asyncio.BaseProtocol | None = None
        self._pending = b""  # the start of a frame whose end has not arrived
        self._to_websockets = 0  # bytes still to come of a frame websockets is parsing
        self._fragments: list[bytes] = []  # of a fragmented message, while it lasts
        self._fragmented_text = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = asyncio.Event()

    def accept(self, request: web.Request) -> None:
        """Answer the upgrade with 101 and own the connection from now on. HandshakeRefused
        when the request is no valid handshake; ConnectionResetError when the client is gone."""
        self._ws.receive_data(request_head(request.raw_path, request.raw_headers))
        events = self._ws.events_received()
        if not events:  # not even HTTP/1.1 GET: websockets could not read it as a handshake
            raise HandshakeRefused(web.Response(status=400, text="not a WebSocket upgrade"))
        response = self._ws.accept(cast(Request, events[0]))
        if response.status_code != 101:
            raise HandshakeRefused(web.Response(
                status=response.status_code, text=response.body.decode(errors="replace"),
                headers={k: v for k, v in response.headers.raw_items()
                         if k.lower() in ("upgrade", "sec-websocket-version")}))
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client left before the upgrade")
        self._aiohttp = transport.get_protocol()
        transport.set_protocol(self)
        self._transport = transport
        self._ws.send_response(response)
        self._flush()
        if self._inactivity_timeout_s > 0:
            loop = asyncio.get_running_loop()
            self._inactivity = Inactivity(self._inactivity_timeout_s, loop.time())
            self._inactivity_timer = loop.call_later(self._inactivity.interval_s,
                                                     self._check_inactivity)

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        self._read = self._read_recently = True  # all the inactivity checks cost a read
        if self._pending:
            data, self._pending = self._pending + data, b""
        pos, end = 0, len(data)
        on_message = self.on_message
        fast_frame = 0  # bytes of the last frame handled here
        while pos < end:
            if self._to_websockets:
                take = min(self._to_websockets, end - pos)
                self._to_websockets -= take
                self._feed(data[pos:pos + take])
                pos += take
                continue
            if not self._open:  # closing: websockets takes it all
                self._feed(data[pos:] if pos else data)
                return
            # The fast path, inline (a call per message costs what it saves): a whole masked
            # FIN text or binary frame with a 7- or 16-bit length, outside a fragmented message
            # (inside one, such a frame is a protocol error for websockets to find).
            if end - pos < 2:
                break
            first, length = data[pos], data[pos + 1] - _MASKED
            if ((first == _FAST_TEXT or first == _FAST_BINARY) and 0 <= length <= 126
                    and not self._fragments):
                if length < 126:
                    start = pos + 6
                elif end - pos >= 4:
                    length = data[pos + 2] << 8 | data[pos + 3]
                    start = pos + 8
                else:
                    break
                stop = start + length
                if length <= self._max_size:
                    if stop > end:
                        break  # wait for the rest (at most 64 KiB are held)
                    payload = apply_mask(data[start:stop], data[start - 4:start])
                    fast_frame = stop - pos
                    pos = stop
                    if first == _FAST_TEXT:
                        try:
                            message: str | bytes = payload.decode()
                        except UnicodeDecodeError as exc:
                            self._invalid_text(exc)
                            continue
                    else:
                        message = payload
                    try:
                        on_message(message)
                    except Exception:  # a bug in one handler must not kill the reader
                        log.exception("stream_message_handler_failed")
                    continue
            extent = frame_extent(data, pos)
            if extent is None:
                break
            self._to_websockets = extent[0] + extent[1]  # any other frame: websockets parses it
        self._pending = data[pos:]
        if self._armed and fast_frame >= MEDIA_MESSAGE_BYTES and self._open:
            self._coalesce_reads(fast_frame)

    def eof_received(self) -> bool | None:
        self._ws.receive_eof()
        self._flush()
        return None  # the transport closes itself

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._coalescing is not None:
            self._coalescing.forget(self)
        if self._inactivity_timer is not None:
            self._inactivity_timer.cancel()
        self._closed.set()
        self._writable.set()  # senders waiting for room learn that the stream is gone
        if self._aiohttp is not None:  # aiohttp finishes its request, as for a client gone
            self._aiohttp.connection_lost(exc)

    # What a call uses

    async def send(self, text: str) -> None:
        """Send a text message; waits while the transport's buffer is full (backpressure).
        ConnectionResetError once the stream is closing or closed."""
        if (not self._open or self._transport is None
                or self._transport.is_closing()):
            raise ConnectionResetError("the media stream is closed")
        # Framed here, not by websockets' send_text (4 µs a message, in Python): a data frame
        # changes nothing in its state, and whatever it had to send went out already.
        self._transport.write(text_frame(text.encode()))
        if not self._writable.is_set():
            await self._writable.wait()
            if self._closed.is_set():
                raise ConnectionResetError("the media stream closed while sending")

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "", *,
                    timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Run the close handshake and wait for the connection's end; abort a peer that does
        not answer within `timeout_s`."""
        if self._transport is None or self._closed.is_set():
            return
        if self._open:
            self._ws.send_close(code, reason)
            self._flush()
        try:
            async with asyncio.timeout(timeout_s):
                await self._closed.wait()
        except TimeoutError:
            self._transport.abort()
            await self._closed.wait()  # abort calls connection_lost soon

    async def wait_closed(self) -> None:
        """Until the connection has ended, whoever ended it."""
        await self._closed.wait()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def backed_up(self) -> bool:
        """The send queue is full: the peer reads slower than we send (or not at all)."""
        return not self._writable.is_set()

    # Inside

    # Read coalescing (the sweep's side)

    def read_since_sweep(self) -> bool:
        read, self._read_recently = self._read_recently, False
        return read

    def lower_water(self) -> None:
        if self._coalesced and self._transport is not None and not self._transport.is_closing():
            self._set_low_water(1)
        self._armed = self._open  # a stream that resumes coalesces again

    def _coalesce_reads(self, message_bytes: int) -> None:
        assert self._coalescing is not None
        self._armed = False
        # Half a message short of `messages` whole ones: sizes vary by a few digits of
        # sequence numbers, and a mark or DTMF event in between must not hold media back.
        messages = self._coalescing.messages
        self._set_low_water(min(MAX_LOW_WATER,
                                (messages - 1) * message_bytes + message_bytes // 2))
        if self._coalesced:
            self._read_recently = False
            self._coalescing.watch(self)

    def _set_low_water(self, nbytes: int) -> None:
        assert self._transport is not None
        sock = self._transport.get_extra_info("socket")
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return  # e.g. a Unix socket in a test: reads stay one message each
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, nbytes)
        except OSError as exc:  # not fatal: reads stay as they were
            log.warning("stream_low_water_failed", error=str(exc))
            return
        self._coalesced = nbytes > 1

    def _check_inactivity(self) -> None:
        assert self._inactivity is not None and self._transport is not None
        loop = asyncio.get_running_loop()
        if self._inactivity.gone(self._read, loop.time()):
            self._inactivity_timer = None
            self._transport.abort()  # a peer that sends nothing would not answer a close
            self.on_inactive()  # before the connection's end is seen: it names the reason
            return
        self._read = False
        self._inactivity_timer = loop.call_later(self._inactivity.interval_s,
                                                 self._check_inactivity)

    def _feed(self, data: bytes) -> None:
        self._ws.receive_data(data)
        for event in self._ws.events_received():
            self._frame(cast(Frame, event))
        self._flush()

    def _frame(self, frame: Frame) -> None:
        """A frame websockets parsed: data frames make messages; it handled control frames."""
        data = bytes(frame.data)  # the same object: its parser makes bytes
        if frame.opcode in _DATA:
            if frame.fin:
                self._message(data, frame.opcode is Opcode.TEXT)
            else:
                self._fragments, self._fragmented_text = [data], frame.opcode is Opcode.TEXT
        elif frame.opcode is Opcode.CONT:
            self._fragments.append(data)
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), []
                self._message(data, self._fragmented_text)

    def _message(self, data: bytes, text: bool) -> None:
        if text:
            self._text(data)
        else:
            self._deliver(data)

    def _text(self, data: bytes) -> None:
        try:
            message = data.decode()
        except UnicodeDecodeError as exc:
            self._invalid_text(exc)
            return
        self._deliver(message)

    def _invalid_text(self, exc: UnicodeDecodeError) -> None:
        """RFC 6455 8.1: a text message that is not UTF-8 fails the connection (1007)."""
        self._ws.fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
        self._flush()

    def _deliver(self, message: str | bytes) -> None:
        try:
            self.on_message(message)
        except Exception:  # a bug in one handler must not kill the connection's reader
            log.exception("stream_message_handler_failed")

    def _flush(self) -> None:
        assert self._transport is not None
        self._open = self._ws.state is State.OPEN
        if self._coalesced and not self._open:  # the peer's close frame is a few bytes
            self.lower_water()
        for chunk in self._ws.data_to_send():
            if chunk:
                self._transport.write(chunk)
            else:  # websockets' SEND_EOF: the server closes the TCP connection (RFC 6455 7.1.1)
                self._transport.close()
