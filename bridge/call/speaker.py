"""The TTS driver of one call: utterances in order, each cut into pieces, synthesized with a
small lookahead, decoded, encoded to 8 kHz mu-law frames and queued on the paced sender.

The next piece is requested while the current one is still arriving, so a multi-sentence reply
plays without gaps and its first sentence is heard before the rest is synthesized. An utterance
may instead carry audio of its own (DTMF tones): it takes its turn in the same queue, is marked
and cut like speech, and never reaches the TTS.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import structlog

from bridge.audio.codec import decode_audio
from bridge.audio.framer import Framer
from bridge.audio.pipeline import TelephonyEncoder
from bridge.call.lexicon import EMPTY, Lexicon, LexiconStream
from bridge.call.segment import Segmenter
from bridge.call.sender import PacedSender
from bridge.errors import BridgeError
from bridge.silma.connection import AudioPiece
from bridge.supervisor import Supervisor
from bridge.tracing.trace import UtteranceTrace

LOOKAHEAD = 2  # pieces in flight at once per call: the one playing and the next
ULAW_RATE = 8000
# One utterance's text, however many partial says stream it: some ten minutes of speech.
MAX_UTTERANCE_CHARS = 10_000
# The same text once its pronunciation overrides are applied.
MAX_UTTERANCE_SPOKEN_CHARS = 2 * MAX_UTTERANCE_CHARS


class Synthesize(Protocol):
    """One piece's audio (SilmaClient.synthesize): `on_step` hears its progress, `urgent` says
    a caller is waiting on it now, `needed_at` when (loop time) the audio ahead of it runs out."""

    def __call__(self, text: str, on_step: Callable[[str], None], *, urgent: bool,
                 needed_at: Callable[[], float]) -> AsyncIterator[AudioPiece]: ...


# A piece given up after its retries, or whose audio cannot be decoded: the utterance goes on.
PieceFailed = Callable[[UtteranceTrace, str, BridgeError], None]
_DONE = object()
RETRY_STEP = "retry:"  # the client's on_step for a retry: "retry:busy" (a retry_core.Kind)
log = structlog.get_logger("bridge.call")


class _Encoder:
    """Turns TTS pieces of any declared format into whole mu-law frames for one utterance."""

    def __init__(self) -> None:
        self._framer = Framer()  # for pieces the server already sent as 8 kHz mu-law
        self._pcm: TelephonyEncoder | None = None

    def encode(self, piece: AudioPiece) -> bytes:
        if piece.format == "ulaw" and piece.sample_rate == ULAW_RATE:
            frames = self._framer.push(piece.data)
        else:
            samples, rate = decode_audio(piece.data, piece.format or None, piece.sample_rate)
            frames = b""
            if self._pcm is None:
                self._pcm = TelephonyEncoder(rate)
            elif self._pcm.in_rate != rate:
                # A server may switch rates between pieces: finish the old stream first.
                frames = self._pcm.flush()
                self._pcm.set_input_rate(rate)
            frames += self._pcm.process(samples)
        return frames

    def flush(self) -> bytes:
        return (self._pcm.flush() if self._pcm is not None else b"") + self._framer.flush()


class Utterance:
    """An utterance's text as TTS pieces, arriving whole or streamed (SpeechStream).

    Pieces are cut only once the utterance is bound to its call's pronunciation lexicon (the
    speaker binds it when it is said): overrides apply to the text before it is segmented, so
    a written form is replaced whole, never split over two pieces. Text said before that (while
    the call's TTS opens) waits in the utterance."""

    def __init__(self, trace: UtteranceTrace,
                 refused: Callable[[str], None] | None = None) -> None:
        self.trace = trace
        self.audio = b""  # set by `prepared`: whole frames played as they are
        self.pieces: asyncio.Queue[str | None] = asyncio.Queue()
        self._segmenter = Segmenter()
        self._refused = refused
        self._words: LexiconStream | None = None  # set by bind()
        self._waiting: list[str] = []  # text pushed before bind()
        self._spoken_chars = 0
        self._cut: set[str] = set()  # truncations already reported: once per utterance
        self._ended = False

    @classmethod
    def prepared(cls, trace: UtteranceTrace, mulaw: bytes) -> Utterance:
        """An utterance of ready 8 kHz mu-law audio (whole 20 ms frames), with no text."""
        utt = cls(trace)
        utt.audio = mulaw
        utt.end()
        return utt

    def push(self, text: str) -> None:
        if self._ended or not text:
            return
        if not self.trace.text:
            self.trace.step("first_text")  # a streamed reply's first words (an LLM's token)
        room = MAX_UTTERANCE_CHARS - len(self.trace.text)
        if len(text) > room:
            self._truncated("utterance_text_truncated", MAX_UTTERANCE_CHARS)
            text = text[:max(room, 0)]
            if not text:
                return
        self.trace.text += text
        if self._words is None:
            self._waiting.append(text)
        else:
            self._segment(self._words.push(text))

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            if self._words is not None:
                self._finish()

    def bind(self, lexicon: Lexicon) -> None:
        """Speak through `lexicon` from now on: what waited is rewritten and cut now."""
        if self._words is not None:
            return
        self._words = lexicon.stream()
        waiting, self._waiting = "".join(self._waiting), []
        if waiting:
            self._segment(self._words.push(waiting))
        if self._ended:
            self._finish()

    def _segment(self, spoken: str) -> None:
        # Overrides may lengthen the text (a one-letter word said in 128): the spoken text has
        # its own bound, so no list makes an utterance speak for hours.
        room = MAX_UTTERANCE_SPOKEN_CHARS - self._spoken_chars
        if len(spoken) > room:
            self._truncated("utterance_spoken_truncated", MAX_UTTERANCE_SPOKEN_CHARS)
            spoken = spoken[:max(room, 0)]
        self._spoken_chars += len(spoken)
        for piece in self._segmenter.push(spoken):
            self.pieces.put_nowait(piece)

    def _finish(self) -> None:
        assert self._words is not None
        self._segment(self._words.flush())
        for piece in self._segmenter.flush():
            self.pieces.put_nowait(piece)
        self.pieces.put_nowait(None)

    def _truncated(self, kind: str, limit: int) -> None:
        if kind in self._cut:
            return
        self._cut.add(kind)
        if self._refused is not None:
            self._refused(kind)
        log.warning(kind, utterance=self.trace.index, limit=limit)


class Speaker:
    def __init__(self, synthesize: Synthesize, sender: PacedSender,
                 on_piece_failed: PieceFailed, lexicon: Lexicon = EMPTY) -> None:
        self._synthesize = synthesize
        self._lexicon = lexicon  # the call owner's pronunciation overrides
        self._sender = sender
        self._on_piece_failed = on_piece_failed
        self._queue: asyncio.Queue[Utterance] = asyncio.Queue()
        self._current: asyncio.Task[None] | None = None

    def say(self, utt: Utterance) -> None:
        utt.bind(self._lexicon)
        self._queue.put_nowait(utt)

    @property
    def busy(self) -> bool:
        return self._current is not None or not self._queue.empty()

    def interrupt(self) -> list[UtteranceTrace]:
        """Stop the utterance being synthesized and drop the queued ones; returns those cut."""
        dropped: list[UtteranceTrace] = []
        while not self._queue.empty():
            dropped.append(self._queue.get_nowait().trace)
        if self._current is not None:
            self._current.cancel()
        return dropped

    async def run(self) -> None:
        while True:
            utt = await self._queue.get()
            self._current = asyncio.create_task(self._speak(utt),
                                                name=f"speak-{utt.trace.index}")
            try:
                await self._current
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the call is ending, not just this utterance
                utt.trace.finish("interrupted")
            finally:
                self._current = None

    async def _speak(self, utt: Utterance) -> None:
        trace = utt.trace
        if utt.audio:
            self._sender.push_audio(trace, utt.audio)
            self._sender.push_mark(trace)
            return
        encoder = _Encoder()
        # Pieces in flight: the one playing and the next. A slot frees when a piece is consumed.
        slots = asyncio.Semaphore(LOOKAHEAD)
        order: asyncio.Queue[tuple[str, asyncio.Queue[object]] | None] = asyncio.Queue()
        # A TTS failure travels in the audio queues; anything else a fetch raises is a bug,
        # re-raised below so the speaker part fails with it.
        bugs: list[BaseException] = []
        tasks = Supervisor(lambda _name, exc: bugs.append(exc))

        async def request_pieces() -> None:
            fetched = 0
            while (text := await utt.pieces.get()) is not None:
                trace.step("text_split")
                await slots.acquire()
                audio: asyncio.Queue[object] = asyncio.Queue()
                order.put_nowait((text, audio))
                tasks.spawn(f"fetch-{trace.index}-{fetched}",
                            self._fetch(text, audio, trace, first=not fetched))
                fetched += 1
            order.put_nowait(None)

        tasks.spawn(f"pieces-{trace.index}", request_pieces())
        try:
            while (entry := await order.get()) is not None:
                text, audio = entry
                lost = False  # the rest of a piece that failed is not played
                while (item := await audio.get()) is not _DONE:
                    if lost:
                        continue
                    try:
                        if isinstance(item, BaseException):
                            raise item
                        assert isinstance(item, AudioPiece)
                        self._sender.push_audio(trace, encoder.encode(item))
                    except BridgeError as exc:  # TTSError, AudioFormatError
                        # Given up after its retries (client.py), or undecodable: the caller
                        # misses this piece, and the reply goes on from the next one.
                        lost = True
                        self._on_piece_failed(trace, text, exc)
                slots.release()
            trace.step("synthesis_complete")
        finally:
            await tasks.aclose()
        if bugs:
            raise bugs[0]
        self._sender.push_audio(trace, encoder.flush())
        self._sender.push_mark(trace)

    async def _fetch(self, text: str, queue: asyncio.Queue[object], utt: UtteranceTrace, *,
                     first: bool) -> None:
        """One piece's audio into `queue`. The trace's TTS steps are the first piece's: that is
        the request the caller waits on."""

        def on_step(name: str) -> None:
            if name == "fallback":
                utt.fallback = True
            elif name.startswith(RETRY_STEP):
                utt.retried(name.removeprefix(RETRY_STEP))
            elif first:
                utt.step(name)

        try:
            async for piece in self._synthesize(text, on_step, urgent=first,
                                                needed_at=self._sender.audio_runs_out_at):
                on_step("first_audio")
                queue.put_nowait(piece)
        except BridgeError as exc:
            queue.put_nowait(exc)
        finally:
            queue.put_nowait(_DONE)
