"""MediaSocket (bridge/web/media_socket.py) on a real aiohttp server on loopback, with real
clients (aiohttp's, websockets', raw TCP): data messages reach the callback in order, inside
the socket read; pings, the close handshake, oversize and fragmented messages, frames split
across reads, backpressure; and aiohttp finishes the request it handed over."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

import aiohttp
import pytest
import websockets
from aiohttp import WSCloseCode, WSMsgType, web
from websockets.client import ClientProtocol
from websockets.uri import parse_uri

from bridge.web.media_socket import HandshakeRefused, MediaSocket


class Recorder(MediaSocket):
    """A MediaSocket that says when it read, and when its transport paused and resumed."""

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint.on_message, max_size=endpoint.max_size)
        self.reads = asyncio.Event()
        self.paused = asyncio.Event()
        self.resumed = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.reads.set()

    def pause_writing(self) -> None:
        super().pause_writing()
        self.paused.set()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.resumed.set()


@dataclasses.dataclass
class Endpoint:
    max_size: int = 4096
    received: list[str | bytes] = dataclasses.field(default_factory=list)
    in_task: list[bool] = dataclasses.field(default_factory=list)  # was a task running?
    want: int = 0
    got: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    accepted: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    ended: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    socket: Recorder | None = None
    gone_first: bool = False  # the connection closes before the handler accepts
    refused: list[BaseException] = dataclasses.field(default_factory=list)

    def on_message(self, message: str | bytes) -> None:
        self.in_task.append(asyncio.current_task() is not None)
        if message == "boom":
            raise RuntimeError("a handler bug")
        self.received.append(message)
        if len(self.received) >= self.want:
            self.got.set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        socket = Recorder(self)
        if self.gone_first and request.transport is not None:
            request.transport.close()
        try:
            socket.accept(request)
        except HandshakeRefused as refused:
            return refused.response
        except ConnectionResetError as exc:
            self.refused.append(exc)
            return web.StreamResponse(status=101)
        self.socket = socket
        self.accepted.set()
        await socket.wait_closed()
        self.ended.set()
        return web.StreamResponse(status=101)


@dataclasses.dataclass
class Server:
    url: str
    runner: web.AppRunner

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1)


@contextlib.asynccontextmanager
async def serving(endpoint: Endpoint) -> AsyncIterator[Server]:
    app = web.Application()
    app.router.add_get("/ws", endpoint.handle)
    app.router.add_get("/other", _ok)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield Server(f"http://127.0.0.1:{port}/ws", runner)
    finally:
        await runner.cleanup()


async def _ok(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def test_data_messages_reach_the_callback_in_order_inside_the_read() -> None:
    endpoint = Endpoint(want=201)
    async with serving(endpoint) as server, aiohttp.ClientSession() as http:
        async with http.ws_connect(server.url, autoping=False) as ws:
            for i in range(100):
                await ws.send_str(f"text {i}")
                await ws.send_bytes(f"bin {i}".encode())
            await ws.send_str("boom")  # the callback fails: logged, the connection lives on
            await ws.send_str("after")
            await ws.ping(b"are you there")
            async with asyncio.timeout(10):
                pong = await ws.receive()
                await endpoint.got.wait()
            assert pong.type is WSMsgType.PONG and pong.data == b"are you there"
            await ws.close()
            assert ws.close_code == WSCloseCode.OK  # the server answered the close
        async with asyncio.timeout(10):
            await endpoint.ended.wait()
        # aiohttp's protocol was told of the connection's end (it drops it with its request).
        assert server.runner.server is not None
        assert [conn.transport for conn in server.runner.server.connections] == [None]
        async with http.get(server.url.replace("/ws", "/other")) as other:
            assert await other.text() == "ok"
    expected: list[str | bytes] = []
    for i in range(100):
        expected += [f"text {i}", f"bin {i}".encode()]
    assert endpoint.received == [*expected, "after"]
    assert endpoint.in_task == [False] * 202  # called in the read callback, never in a task


async def test_big_and_fragmented_messages_go_through_websockets_and_arrive_whole() -> None:
    endpoint = Endpoint(max_size=300_000, want=4)
    big = "é" * 100_000  # 200 kB of UTF-8: over the 64 KiB the fast path takes
    async with serving(endpoint) as server, \
            websockets.connect(server.ws_url, compression=None, max_size=None) as ws:
        await ws.send(big)
        await ws.send(["frag", "mented ", "text"])  # one message in three frames
        await ws.ping(b"mid")
        await ws.send([b"frag", b"mented"])
        await ws.send("plain")
        async with asyncio.timeout(10):
            await endpoint.got.wait()
    assert endpoint.received == [big, "fragmented text", b"fragmented", "plain"]


async def test_a_frame_split_across_reads_is_put_back_together() -> None:
    endpoint = Endpoint(want=2)
    client = ClientProtocol(parse_uri("ws://127.0.0.1/ws"))
    async with serving(endpoint) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.runner.addresses[0][1])
        client.send_request(client.connect())
        for data in client.data_to_send():
            writer.write(data)
        async with asyncio.timeout(10):
            await endpoint.accepted.wait()
            client.receive_data(await reader.readuntil(b"\r\n\r\n"))
        assert client.handshake_exc is None
        socket = endpoint.socket
        assert socket is not None
        client.send_text(b"x" * 300)  # 16-bit length: a 4-byte header, then the mask
        client.send_binary(b"second")
        wire = b"".join(client.data_to_send())
        for cut in (1, 3, 5, 7, 200, len(wire) - 3):  # inside the header, mask and payload
            socket.reads.clear()
            writer.write(wire[:cut])
            wire = wire[cut:]
            async with asyncio.timeout(10):
                await socket.reads.wait()  # the server read this piece on its own
        writer.write(wire)
        async with asyncio.timeout(10):
            await endpoint.got.wait()
        writer.close()
    assert endpoint.received == ["x" * 300, b"second"]


def _zero_masked(first: int, payload: bytes) -> bytes:
    """A client frame under an all-zero mask (legal, RFC 6455 5.3): its payload is as written."""
    assert len(payload) < 126
    return bytes((first, 0x80 | len(payload))) + bytes(4) + payload


async def test_a_frame_right_after_a_fragmented_message_is_read_from_its_start() -> None:
    endpoint = Endpoint(want=3)
    client = ClientProtocol(parse_uri("ws://127.0.0.1/ws"))
    async with serving(endpoint) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.runner.addresses[0][1])
        client.send_request(client.connect())
        writer.write(b"".join(client.data_to_send()))
        async with asyncio.timeout(10):
            await endpoint.accepted.wait()
            await reader.readuntil(b"\r\n\r\n")
        socket = endpoint.socket
        assert socket is not None
        # A binary message whose payload looks like a whole frame: read from anywhere but its
        # start, "evil" would come out.
        decoy = _zero_masked(0x81, b"evil")
        wire = (_zero_masked(0x01, b"frag") + _zero_masked(0x80, b"mented")
                + _zero_masked(0x82, decoy) + _zero_masked(0x82, b"last"))
        cut = len(wire) - len(decoy) - 10  # one read: the fragments, the header of the next
        socket.reads.clear()
        writer.write(wire[:cut])
        async with asyncio.timeout(10):
            await socket.reads.wait()
        writer.write(wire[cut:])
        async with asyncio.timeout(10):
            await endpoint.got.wait()
        writer.close()
    assert endpoint.received == ["fragmented", decoy, b"last"]


async def test_the_server_closes_with_a_code_and_the_client_sees_it() -> None:
    endpoint = Endpoint()
    async with serving(endpoint) as server, aiohttp.ClientSession() as http:
        async with http.ws_connect(server.url) as ws:
            async with asyncio.timeout(10):
                await endpoint.accepted.wait()
            assert endpoint.socket is not None
            closing = asyncio.create_task(
                endpoint.socket.close(WSCloseCode.GOING_AWAY, "server shutdown"))
            async with asyncio.timeout(10):
                msg = await ws.receive()  # aiohttp's client answers the close frame
                await closing
        assert msg.type is WSMsgType.CLOSE
        assert (msg.data, msg.extra) == (WSCloseCode.GOING_AWAY, "server shutdown")
        assert endpoint.socket.closed
        with pytest.raises(ConnectionResetError):
            await endpoint.socket.send("too late")


async def test_a_send_after_the_connection_dropped_fails() -> None:
    endpoint = Endpoint()
    async with serving(endpoint) as server:
        _, writer = await asyncio.open_connection("127.0.0.1", server.runner.addresses[0][1])
        client = ClientProtocol(parse_uri("ws://127.0.0.1/ws"))
        client.send_request(client.connect())
        writer.write(b"".join(client.data_to_send()))
        async with asyncio.timeout(10):
            await endpoint.accepted.wait()
        writer.transport.abort()  # gone without a close frame
        async with asyncio.timeout(10):
            await endpoint.ended.wait()
        assert endpoint.socket is not None
        with pytest.raises(ConnectionResetError):
            await endpoint.socket.send("into the void")


async def test_a_peer_that_never_answers_the_close_is_cut_off() -> None:
    endpoint = Endpoint()
    client = ClientProtocol(parse_uri("ws://127.0.0.1/ws"))
    async with serving(endpoint) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.runner.addresses[0][1])
        client.send_request(client.connect())
        writer.write(b"".join(client.data_to_send()))
        async with asyncio.timeout(10):
            await reader.readuntil(b"\r\n\r\n")
            await endpoint.accepted.wait()
        assert endpoint.socket is not None
        async with asyncio.timeout(10):  # the raw client reads the close frame, never answers
            await endpoint.socket.close(timeout_s=0.2)
            await endpoint.ended.wait()
            assert await reader.read() != b""  # the close frame came, then the connection ended
        writer.close()
    assert endpoint.socket.closed


async def test_an_oversize_message_closes_the_stream_with_1009() -> None:
    endpoint = Endpoint(max_size=1000)
    async with serving(endpoint) as server, aiohttp.ClientSession() as http:
        async with http.ws_connect(server.url) as ws:
            await ws.send_str("x" * 2000)
            async with asyncio.timeout(10):
                msg = await ws.receive()
                await endpoint.ended.wait()
    assert msg.type is WSMsgType.CLOSE and msg.data == WSCloseCode.MESSAGE_TOO_BIG
    assert endpoint.received == []


async def test_invalid_utf8_in_a_text_message_closes_the_stream_with_1007() -> None:
    endpoint = Endpoint()
    client = ClientProtocol(parse_uri("ws://127.0.0.1/ws"))
    async with serving(endpoint) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.runner.addresses[0][1])
        client.send_request(client.connect())
        writer.write(b"".join(client.data_to_send()))
        async with asyncio.timeout(10):
            client.receive_data(await reader.readuntil(b"\r\n\r\n"))
            client.send_text(b"\xff\xfe not UTF-8")
            writer.write(b"".join(client.data_to_send()))
            client.receive_data(await reader.read())  # up to the server's TCP close
            await endpoint.ended.wait()
        writer.close()
    assert client.close_rcvd is not None and client.close_rcvd.code == 1007
    assert endpoint.received == []


async def test_a_connection_gone_before_the_upgrade_is_not_taken_over() -> None:
    endpoint = Endpoint(gone_first=True)
    async with serving(endpoint) as server, aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await http.ws_connect(server.url)
    # (aiohttp's client tries a vanished connection twice)
    assert {type(exc) for exc in endpoint.refused} == {ConnectionResetError}
    assert not endpoint.accepted.is_set()


async def test_no_websocket_upgrade_is_refused_before_any_101() -> None:
    endpoint = Endpoint()
    async with serving(endpoint) as server, aiohttp.ClientSession() as http:
        async with http.get(server.url) as plain:
            assert plain.status == 426  # websockets' answer: Upgrade Required
            assert plain.headers["Upgrade"] == "websocket"
    assert not endpoint.accepted.is_set()


async def test_a_full_transport_makes_send_wait_until_the_client_reads() -> None:
    endpoint = Endpoint()
    chunk, count = "y" * 65536, 200  # 13 MB: more than loopback's socket buffers hold
    async with serving(endpoint) as server, \
            websockets.connect(server.ws_url, compression=None, max_queue=1,
                               max_size=None) as ws:
        async with asyncio.timeout(10):
            await endpoint.accepted.wait()
        socket = endpoint.socket
        assert socket is not None
        sent = 0

        async def send_all() -> None:
            nonlocal sent
            for i in range(count):
                await socket.send(f"{i:04d}{chunk}")
                sent += 1

        sender = asyncio.create_task(send_all())
        async with asyncio.timeout(10):
            await socket.paused.wait()  # the client reads nothing: the buffer filled
        assert not sender.done() and sent < count  # so send() waits
        received = [await ws.recv() for _ in range(count)]  # the client reads: send resumes
        async with asyncio.timeout(10):
            await sender
    assert socket.resumed.is_set()
    assert [int(message[:4]) for message in received] == list(range(count))
    assert all(message[4:] == chunk for message in received)
