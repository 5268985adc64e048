"""The load test's TTS server: our protocol, the sim engine's speech and latency model, replies
pre-rendered and served from memory. Its own process, beside the generator on the core they
share:

    PYTHONPATH=scripts python -m loadtest_lib.tts_standin --port 8091 --first-audio 0.15 --rtf 0.12

It answers the bridge exactly as `python -m bridge tts-server --engine sim` does at 8 kHz (the
same /ws protocol, hello, capabilities, priorities and deadlines, cancel, voices, and a /health
with the same capacity figures), so the bridge's pool, its parsing of every reply and its audio
path run as in production. A distinct request (text, speed, format, rate) is rendered once, by
the sim engine itself at zero latency; each later one is its messages replayed on the sim's
schedule, the first after `--first-audio`, each further 0.5 s chunk when `--rtf` times the
audio already sent has passed. That leaves out what made the sim server cost 19% of the
generator's core at 500 calls: per chunk the numpy slicing, fades, mu-law and base64 encoding
and JSON building, per request its log line. The HTTP fallback (/synthesize) is not served:
the bridge uses it only when its WebSocket pool is down, which the load test reports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from bridge.audio.codec import encode_audio
from bridge.audio.resample import StreamResampler
from bridge.silma.protocol import (
    CAPABILITIES,
    URGENT,
    Cancel,
    ErrorReply,
    Hello,
    RegisterVoice,
    RequestError,
    ServerHello,
    SynthesizeRequest,
    VoiceRegistered,
    build_cancelled,
    build_error,
    build_server_hello,
    build_voice_registered,
    parse_client_message,
)
from bridge.tts_server.engines.base import Utterance
from bridge.tts_server.engines.sim import SimEngine
from bridge.tts_server.pronunciation import read_hints
from bridge.tts_server.voices import VoiceStore, decode_clip
from loadtest_lib.tts_replies import Reply, build_reply, ready_offsets

SAMPLE_RATE = 8000  # the sim's native rate in the load test: no resampling on this core
SERVER_DEADLINE_S = 60.0  # TTSServerSettings.request_deadline_s
MAX_TEXT_CHARS = 2000
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
HEARTBEAT_S = 30.0
EWMA = 0.2  # the scheduler's weight of the newest urgent job in urgent_job_s
ReplyKey = tuple[str, float, str, int, bool]


class Replies:
    """Rendered replies by request, each rendered once (concurrent first requests share it)."""

    def __init__(self, engine: SimEngine, first_audio_s: float, rtf: float) -> None:
        self._engine = engine  # started with first_audio_s=0, rtf=0: renders at once
        self._first_audio_s = first_audio_s
        self._rtf = rtf
        self._rendering: dict[ReplyKey, asyncio.Task[Reply]] = {}

    async def get(self, request: SynthesizeRequest) -> Reply:
        key = (request.text, request.speed, request.output_format, request.output_rate,
               request.stream)
        task = self._rendering.get(key)
        if task is None:
            task = self._rendering[key] = asyncio.create_task(self._render(request))
        return await asyncio.shield(task)

    async def _render(self, request: SynthesizeRequest) -> Reply:
        """What TTSService._render makes of the sim's chunks: resampled to the asked rate (none
        at 8 kHz), encoded, an empty piece skipped; the flush due with the last chunk."""
        fmt, rate = request.output_format, request.output_rate
        utterance = Utterance(text=request.text, speed=request.speed, seed=request.seed)
        native = [chunk async for chunk in self._engine.synthesize(utterance)]
        ready = ready_offsets([c.size for c in native], SAMPLE_RATE, self._first_audio_s,
                              self._rtf)
        resampler = StreamResampler(SAMPLE_RATE, rate)
        timed = [(at, resampler.process(chunk)) for at, chunk in zip(ready, native, strict=True)]
        timed.append((ready[-1] if ready else 0.0, resampler.flush()))
        timed = [(at, audio) for at, audio in timed if audio.size]
        pieces = [(at, encode_audio(audio, rate, fmt)) for at, audio in timed]
        whole = None if request.stream else encode_audio(
            np.concatenate([a for _, a in timed]) if timed else np.zeros(0, np.float32), rate, fmt)
        return build_reply(pieces, fmt, rate, whole=whole)


@dataclasses.dataclass
class Counts:
    """What /health announces, kept as the real scheduler keeps it."""

    concurrency: int
    max_queue: int
    in_flight: int = 0
    urgent_job_s: float | None = None
    voices: set[str] = dataclasses.field(default_factory=set)

    def urgent_done(self, took_s: float) -> None:
        last = self.urgent_job_s
        self.urgent_job_s = took_s if last is None else last + EWMA * (took_s - last)


class Session:
    """One WebSocket: requests in their own tasks, replies as whole frames."""

    def __init__(self, ws: web.WebSocketResponse, replies: Replies, counts: Counts) -> None:
        self._ws, self._replies, self._counts = ws, replies, counts
        self._by_id: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._max_in_flight = counts.concurrency + counts.max_queue

    async def read_loop(self) -> None:
        async for message in self._ws:
            if message.type == WSMsgType.TEXT:
                await self._on_text(message.data)
            elif message.type == WSMsgType.BINARY:
                binary = "binary frames are not supported: send JSON text"
                await self._send(build_error(ErrorReply(binary, code="bad_request")))

    async def cancel_all(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_text(self, raw: bytes) -> None:
        try:
            if len(raw) > MAX_MESSAGE_BYTES:
                raise RequestError(f"message is {len(raw)} bytes, over the limit")
            message = parse_client_message(raw, max_text_chars=MAX_TEXT_CHARS)
            if isinstance(message, SynthesizeRequest):
                message = dataclasses.replace(message, text=read_hints(message.text))
        except (RequestError, ValueError) as exc:
            request_id = exc.request_id if isinstance(exc, RequestError) else None
            await self._send(build_error(ErrorReply(str(exc), request_id, "bad_request")))
            return
        if isinstance(message, Hello):
            await self._send(build_server_hello(ServerHello(
                capabilities=CAPABILITIES, engine="sim", sample_rate=SAMPLE_RATE,
                max_in_flight=self._max_in_flight, can_clone=False)))
        elif isinstance(message, Cancel):
            task = self._by_id.get(message.id)
            if task is not None:
                task.cancel()
                await asyncio.wait({task})
            await self._send(build_cancelled(message.id))
        elif isinstance(message, RegisterVoice):
            await self._register(message)
        else:
            self._start(message)

    async def _register(self, message: RegisterVoice) -> None:
        try:
            audio, rate = decode_clip(message.audio)
        except Exception as exc:  # the real server's AudioFormatError, as a bad request
            await self._send(build_error(ErrorReply(str(exc), message.id, "bad_request")))
            return
        voice_id = VoiceStore.voice_id(message.audio, message.reference_text)
        self._counts.voices.add(voice_id)
        await self._send(build_voice_registered(
            VoiceRegistered(voice_id, message.id, round(audio.size / rate, 3))))

    def _start(self, request: SynthesizeRequest) -> None:
        if request.id is not None and request.id in self._by_id:
            problem = f"request id {request.id!r} is already in flight"
            self._spawn(self._send(build_error(ErrorReply(problem, code="bad_request"))))
            return
        if len(self._tasks) >= self._max_in_flight:
            full = f"{self._max_in_flight} requests already in flight on this socket"
            self._spawn(self._send(build_error(ErrorReply(full, request.id, "busy"))))
            return
        task = self._spawn(self._serve(request))
        if request.id is not None:
            self._by_id[request.id] = task
            task.add_done_callback(lambda done: self._forget(request.id, done))

    def _spawn(self, work: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _forget(self, request_id: str | None, task: asyncio.Task[None]) -> None:
        if request_id is not None and self._by_id.get(request_id) is task:
            del self._by_id[request_id]

    async def _serve(self, request: SynthesizeRequest) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline_s = SERVER_DEADLINE_S if request.deadline_ms is None else min(
            SERVER_DEADLINE_S, request.deadline_ms / 1000)
        if request.voice_id is not None and request.voice_id not in self._counts.voices:
            unknown = f"voice {request.voice_id!r} is not registered here"
            await self._send(build_error(ErrorReply(unknown, request.id, "unknown_voice")))
            return
        self._counts.in_flight += 1
        try:
            async with asyncio.timeout_at(started + deadline_s):
                reply = await self._replies.get(request)
                for at, message in reply.chunks:
                    # Absolute deadlines, as the sim sleeps: a late chunk does not delay the next.
                    await asyncio.sleep(started + at - loop.time())
                    await self._send(message.with_id(request.id))
                await asyncio.sleep(started + reply.done_s - loop.time())
                await self._send(reply.complete.with_id(request.id))
        except TimeoutError:
            late = f"request deadline exceeded: not done within {deadline_s:g} s"
            await self._send(build_error(ErrorReply(late, request.id, "timeout")))
        finally:
            self._counts.in_flight -= 1
        if request.priority is not None and request.priority <= URGENT:
            self._counts.urgent_done(loop.time() - started)

    async def _send(self, frame: bytes) -> None:
        with contextlib.suppress(ConnectionResetError):  # the peer is gone; the read loop ends
            await self._ws.send_frame(frame, WSMsgType.TEXT)


def create_app(replies: Replies, counts: Counts) -> web.Application:
    app = web.Application(client_max_size=MAX_MESSAGE_BYTES)
    sockets: set[web.WebSocketResponse] = set()

    async def ws_route(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=2 * MAX_MESSAGE_BYTES,
                                   heartbeat=HEARTBEAT_S, decode_text=False)
        await ws.prepare(request)
        session = Session(ws, replies, counts)
        sockets.add(ws)
        try:
            await session.read_loop()
        finally:
            sockets.discard(ws)
            await session.cancel_all()
        return ws

    async def health(_: web.Request) -> web.Response:
        urgent = counts.urgent_job_s
        return web.json_response({
            "ready": True, "engine": "sim", "sample_rate": SAMPLE_RATE, "can_clone": False,
            "capabilities": list(CAPABILITIES),
            "max_in_flight": counts.concurrency + counts.max_queue,
            "concurrency": counts.concurrency, "max_queue": counts.max_queue, "queued": 0,
            "in_flight": counts.in_flight, "displaced": 0, "retry_after_s": 0.05,
            "urgent_job_s": None if urgent is None else round(urgent, 3),
            "voices": len(counts.voices), "v2_refused": {},
        })

    async def close_sockets(_: web.Application) -> None:
        await asyncio.gather(*(ws.close(code=WSCloseCode.GOING_AWAY, message=b"shutting down")
                               for ws in tuple(sockets)), return_exceptions=True)

    app.router.add_get("/ws", ws_route)
    app.router.add_get("/health", health)
    app.on_shutdown.append(close_sockets)
    return app


async def serve(args: argparse.Namespace) -> None:
    engine = SimEngine(args.cache_dir, first_audio_s=0.0, rtf=0.0, sample_rate=SAMPLE_RATE)
    await engine.start()  # loads the cached speech (renders it with Piper the first time)
    replies = Replies(engine, args.first_audio, args.rtf)
    runner = web.AppRunner(create_app(replies, Counts(args.concurrency, args.max_queue)),
                           access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="The load test's pre-rendered sim TTS server.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--first-audio", type=float, default=0.15, help="first audio after (s)")
    p.add_argument("--rtf", type=float, default=0.12, help="real-time factor")
    p.add_argument("--concurrency", type=int, default=10000, help="announced slots")
    p.add_argument("--max-queue", type=int, default=10000, help="announced queue")
    p.add_argument("--cache-dir", type=Path, default=Path("data/sim-cache"),
                   help="the sim engine's speech cache")
    args = p.parse_args(argv)
    if args.first_audio < 0 or args.rtf < 0:
        p.error("--first-audio and --rtf must not be negative")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        import uvloop  # as `python -m bridge tts-server` runs
    except ImportError:
        asyncio.run(serve(args))
    else:
        uvloop.run(serve(args))


if __name__ == "__main__":
    main()
