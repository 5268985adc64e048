"""The TTS service behind both transports: parse, admit, synthesize, convert, log.

One request: validate its reference clip, wait for a scheduler slot, run the engine, resample
its native-rate chunks to the asked rate with one stateful resampler per request, encode them in
the asked format, and write one log line. WebSocket and HTTP handlers only move bytes.
Streamed chunks are each decodable alone: in "wav" format every chunk is a whole WAV file.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy as np
import orjson
import structlog

from bridge.audio.codec import encode_audio
from bridge.audio.resample import StreamResampler
from bridge.errors import AudioFormatError, TTSError
from bridge.settings import TTSServerSettings
from bridge.silma.protocol import (
    CAPABILITIES,
    NORMAL,
    AudioChunk,
    ClientMessage,
    ErrorReply,
    RegisterVoice,
    RequestError,
    ServerHello,
    SynthesisComplete,
    SynthesizeRequest,
    VoiceRegistered,
    parse_client_message,
)
from bridge.tts_server.engines.base import Engine, Utterance
from bridge.tts_server.pronunciation import read_hints
from bridge.tts_server.scheduler import Busy, DeadlineExceeded, Scheduler
from bridge.tts_server.voices import (
    MAX_VOICE_S,
    StoredVoice,
    UnknownVoice,
    VoiceStore,
    decode_clip,
)

log = structlog.get_logger("bridge.tts_server")

ChunkSink = Callable[[AudioChunk], Awaitable[None]]


class TTSService:
    def __init__(self, settings: TTSServerSettings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.scheduler = Scheduler(
            settings.concurrency, settings.max_queue, settings.request_deadline_s
        )
        # Per socket: more than the server would admit at once is never useful.
        self.max_in_flight = settings.concurrency + settings.max_queue
        self.voices = VoiceStore(settings.max_voices)
        # Requests the v2 API refused before synthesis, by error code (bad input, busy socket).
        self.v2_refused: collections.Counter[str] = collections.Counter()
        self._load_task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        task = self._load_task
        return task is not None and task.done() and not task.cancelled() and not task.exception()

    def start_loading(self) -> None:
        """Load the engine in the background: the server listens (and says not ready) meanwhile."""
        if self._load_task is None:
            self._load_task = asyncio.create_task(self.engine.start(), name="tts-engine-load")

    async def loaded(self) -> None:
        """Wait for the engine; raises TTSError when it failed to load."""
        if self._load_task is None:
            raise TTSError("the engine is not loading", retryable=True)
        try:
            await asyncio.shield(self._load_task)
        except Exception as exc:
            raise TTSError(f"the {self.engine.name} engine failed to load: {exc}") from exc

    async def stop_loading(self) -> None:
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._load_task

    def hello(self) -> ServerHello:
        return ServerHello(
            capabilities=CAPABILITIES,
            engine=self.engine.name,
            sample_rate=self.engine.sample_rate,
            max_in_flight=self.max_in_flight,
            can_clone=self.engine.can_clone,
        )

    def health(self) -> dict[str, Any]:
        # An engine may add its own figures (the silma engine: real-time factor, first chunk).
        engine_health = getattr(self.engine, "health", None)
        return {
            "ready": self.ready,
            "engine": self.engine.name,
            "sample_rate": self.engine.sample_rate,
            "can_clone": self.engine.can_clone,
            "capabilities": list(CAPABILITIES),
            "max_in_flight": self.max_in_flight,
            "concurrency": self.scheduler.concurrency,
            "max_queue": self.scheduler.max_queue,
            "queued": self.scheduler.queued,
            "in_flight": self.scheduler.running,
            "displaced": self.scheduler.displaced,
            "retry_after_s": round(self.scheduler.retry_after_s(), 3),
            "urgent_job_s": (None if self.scheduler.mean_urgent_job_s is None
                             else round(self.scheduler.mean_urgent_job_s, 3)),
            "voices": len(self.voices),
            "v2_refused": dict(self.v2_refused),
            **({"engine_stats": engine_health()} if callable(engine_health) else {}),
        }

    def parse(self, raw: bytes) -> ClientMessage:
        """One client message; RequestError (with the id where readable) if it cannot be served.
        A synthesize request comes back with its pronunciation hints read (<STAG_PN> and the
        others, in words), as the v2 API reads them: on our protocol too, over WebSocket and
        HTTP alike, no engine ever reads a tag aloud. Our protocol names no model, so the
        text's own letters choose the language (pronunciation.language_of)."""
        limit = self.settings.max_message_bytes
        if len(raw) > limit:
            raise RequestError(
                f"message is {len(raw)} bytes, over the limit of {limit} bytes", _peek_id(raw)
            )
        message = parse_client_message(raw, max_text_chars=self.settings.max_text_chars)
        if isinstance(message, SynthesizeRequest):
            try:
                message = dataclasses.replace(message, text=read_hints(message.text))
            except ValueError as exc:
                raise RequestError(str(exc), message.id) from None
        return message

    def register_voice(self, message: RegisterVoice) -> VoiceRegistered:
        """Decode and keep a reference clip; requests then name it by the returned id."""
        audio, rate = _decode_reference(message.audio, message.id)
        if audio.size > MAX_VOICE_S * rate:
            raise RequestError(f"a voice clip may last {MAX_VOICE_S:g} s at most", message.id)
        voice_id = VoiceStore.voice_id(message.audio, message.reference_text)
        self.voices.add(voice_id, StoredVoice(audio, rate, message.reference_text))
        log.info("tts_voice_registered", voice_id=voice_id, duration_s=round(audio.size / rate, 2))
        return VoiceRegistered(voice_id, message.id, round(audio.size / rate, 3))

    def _utterance(self, request: SynthesizeRequest, voice: StoredVoice | None = None
                   ) -> Utterance:
        reference, rate, reference_text = None, 0, request.reference_text
        if voice is None and request.voice_id is not None:
            voice = self.voices.get(request.voice_id, request.id)
        if voice is not None:
            reference, rate, reference_text = voice.audio, voice.rate, voice.text
        elif request.reference_audio:
            reference, rate = _decode_reference(request.reference_audio, request.id)
        return Utterance(
            text=request.text,
            reference_audio=reference,
            reference_rate=rate,
            reference_text=reference_text,
            speed=request.speed,
            seed=request.seed,
        )

    async def synthesize(
        self,
        request: SynthesizeRequest,
        on_chunk: ChunkSink | None = None,
        *,
        voice: StoredVoice | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> SynthesisComplete:
        """Speak one request. With `on_chunk`, audio goes there and the result carries none.

        `voice` is one the caller has already found (the v2 API's, predefined or registered),
        spoken instead of the request's own; `labels` go into the request's log line.
        Raises RequestError, Busy, DeadlineExceeded or TTSError; cancellation stops it between
        chunks and frees its slot (or its place in the queue), and so does an `on_chunk` that
        raises ConnectionResetError (the client is gone), which is raised on.
        """
        stats = _Stats(time.perf_counter())
        outcome = "error"
        try:
            utterance = self._utterance(request, voice)
            result = await self.scheduler.run(
                lambda: self._render(request, utterance, on_chunk, stats),
                priority=NORMAL if request.priority is None else request.priority,
                deadline_s=None if request.deadline_ms is None else request.deadline_ms / 1000,
            )
            outcome = "ok"
            return result
        except RequestError:
            outcome = "bad_request"
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Busy:
            outcome = "busy"
            raise
        except DeadlineExceeded:
            outcome = "timeout"
            raise
        except ConnectionResetError:
            outcome = "client_gone"
            raise
        finally:
            log.info(
                "tts_request",
                **(labels or {}),
                id=request.id,
                engine=self.engine.name,
                chars=len(request.text),
                stream=request.stream,
                format=request.output_format,
                sample_rate=request.output_rate,
                outcome=outcome,
                audio_s=round(stats.samples / request.output_rate, 3),
                first_audio_ms=stats.first_audio_ms(),
                total_ms=round((time.perf_counter() - stats.started) * 1000, 1),
            )

    async def _render(
        self,
        request: SynthesizeRequest,
        utterance: Utterance,
        on_chunk: ChunkSink | None,
        stats: _Stats,
    ) -> SynthesisComplete:
        await self.loaded()
        fmt, rate = request.output_format, request.output_rate
        resampler = StreamResampler(self.engine.sample_rate, rate)
        kept: list[np.ndarray] = []
        sent = 0

        async def emit(audio: np.ndarray) -> None:
            nonlocal sent
            if not audio.size:  # the resampler holds back its first ~80 ms
                return
            stats.add(audio.size)
            if on_chunk is None:
                kept.append(audio)
                return
            await on_chunk(AudioChunk(request.id, sent, encode_audio(audio, rate, fmt), fmt, rate))
            sent += 1

        # aclosing: a cancel between chunks stops the engine now, not when the generator is GC'd.
        async with contextlib.aclosing(self.engine.synthesize(utterance)) as chunks:
            async for native in chunks:
                await emit(resampler.process(native))
        await emit(resampler.flush())
        if on_chunk is not None:
            return SynthesisComplete(request.id, b"", fmt, rate, chunks=sent)
        audio = np.concatenate(kept) if kept else np.zeros(0, dtype=np.float32)
        return SynthesisComplete(request.id, encode_audio(audio, rate, fmt), fmt, rate)


def error_reply(exc: Exception, request_id: str | None) -> ErrorReply:
    """The client's view of a failed request; anything unexpected is logged and called internal."""
    if isinstance(exc, UnknownVoice):
        return ErrorReply(str(exc), exc.request_id or request_id, "unknown_voice")
    if isinstance(exc, RequestError):
        return ErrorReply(str(exc), exc.request_id or request_id, "bad_request")
    if isinstance(exc, Busy):
        return ErrorReply(f"server busy: {exc}; retry later", request_id, "busy",
                          exc.retry_after_s)
    if isinstance(exc, DeadlineExceeded):
        return ErrorReply(f"request deadline exceeded: {exc}", request_id, "timeout")
    if isinstance(exc, TTSError):
        return ErrorReply(str(exc), request_id, "busy" if exc.retryable else "internal")
    log.exception("tts_request_crashed", id=request_id)
    return ErrorReply("internal server error", request_id, "internal")


@dataclasses.dataclass(slots=True)
class _Stats:
    started: float
    samples: int = 0
    first_audio: float | None = None

    def add(self, samples: int) -> None:
        if self.first_audio is None:
            self.first_audio = time.perf_counter()
        self.samples += samples

    def first_audio_ms(self) -> float | None:
        if self.first_audio is None:
            return None
        return round((self.first_audio - self.started) * 1000, 1)


def _decode_reference(data: bytes, request_id: str | None) -> tuple[np.ndarray, int]:
    try:
        return decode_clip(data)
    except AudioFormatError as exc:
        raise RequestError(str(exc), request_id) from exc


def _peek_id(raw: bytes) -> str | None:
    """The id of an oversized message, so a multiplexing client can match the error."""
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    request_id = message.get("id") if isinstance(message, dict) else None
    return request_id if isinstance(request_id, str) else None
