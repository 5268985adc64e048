"""A server WebSocket whose data messages go straight to a callback, inside the read.

A provider sends 50 media messages a second per call. Through aiohttp's `receive()` each one
resolves a future, wakes the handler's task and climbs an async iterator: at hundreds of calls
that bookkeeping costs more than handling the message. Here the frame parser hands each text or
binary message to a plain function as it is parsed, in the same event-loop callback that read
the bytes. Control frames (ping, pong, close) and errors still take aiohttp's queue, so
`receive()` keeps answering pings and running the close handshake.

This reaches into aiohttp's WebSocket internals (`_post_start` and the reader's queue), which
is why pyproject pins aiohttp's minor version; tests/integration/test_direct_ws.py fails loudly if
they change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import WSMsgType, web
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp.streams import DEFAULT_CHUNK_SIZE

OnMessage = Callable[[str | bytes], None]
_DATA = (WSMsgType.TEXT, WSMsgType.BINARY)
log = structlog.get_logger("bridge.web")


class _DirectQueue(WebSocketDataQueue):  # type: ignore[misc]
    def __init__(self, on_message: OnMessage, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_message = on_message

    def feed_data(self, data: Any, size: int) -> None:
        if data.type in _DATA:
            try:
                self._on_message(data.data)
            except Exception:  # a bug in one handler must not kill the connection's reader
                log.exception("stream_message_handler_failed")
        else:
            super().feed_data(data, size)


class DirectWebSocketResponse(web.WebSocketResponse):
    """`on_message` (set before `prepare`) is called synchronously for every data message;
    iterate the response (or call `receive()`) only to follow the connection's end."""

    on_message: OnMessage | None = None

    def _post_start(self, request: web.BaseRequest, protocol: str | None,
                    writer: Any) -> None:
        # aiohttp's own _post_start with a queue that hands data messages to on_message.
        self._ws_protocol = protocol
        self._writer = writer
        self._reset_heartbeat()
        assert self._loop is not None and self.on_message is not None
        self._reader = _DirectQueue(self.on_message, request._protocol, DEFAULT_CHUNK_SIZE,
                                    loop=self._loop)
        self._parser = WebSocketReader(self._reader, self._max_msg_size,
                                       bool(self._compress), self._decode_text)
        callback = None if self._heartbeat is None else self._on_data_received
        request.protocol.set_parser(self._parser, data_received_cb=callback)
        request.protocol.keep_alive(False)
