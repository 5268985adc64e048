"""One call's I/O shell: reads the provider's stream, runs the call's parts, carries out what the
call core (core.py) decides.

The session is provider-neutral: a parse function turns raw messages into telephony events and a
codec factory builds outbound messages once the stream id is known. Its sender, speaker and agent
loop run under one Supervisor for exactly as long as the stream: a part that fails ends the call
with its name as the reason, and every way a stream can end (stop, socket closed, a silent
peer, hang-up, drain, server shutdown, a failure) goes through one `finally` that stops them and
ends the trace.
The reader never waits on the agent or on TTS: a provider drops audio from a slow reader.

With speech to text configured the call opens a transcriber when its stream starts, hands it
every caller frame and the voice detector's decisions as they are read, and passes what comes
back (transcripts, or the failure that ends them) to the core; without one the per-frame path
pays a single test.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

import structlog

from bridge.agent import base as agent_events
from bridge.agent.base import Agent, AgentEvent
from bridge.audio.dtmf import dtmf_tones
from bridge.audio.vad import VoiceDetector
from bridge.call.core import (
    MAX_PENDING_UTTERANCES,
    START_TIMEOUT_S,
    Action,
    CallBusy,
    CallCore,
    End,
    Finished,
    HangUp,
    OpenSpeech,
    Refused,
    Silence,
    Tell,
)
from bridge.call.lexicon import EMPTY, Lexicon
from bridge.call.pacing import Pacer
from bridge.call.sender import PacedSender, Send
from bridge.call.speaker import Speaker, Synthesize, Utterance
from bridge.errors import BridgeError, ProtocolError
from bridge.settings import CallSettings
from bridge.silma.retry_core import failure_reason
from bridge.stt.base import SpeechToText, Transcriber, Transcript
from bridge.supervisor import Supervisor
from bridge.telephony import events as ev
from bridge.tracing.trace import CallTrace, UtteranceTrace

__all__ = ["MAX_PENDING_UTTERANCES", "START_TIMEOUT_S", "CallBusy", "CallHooks", "CallSession",
           "LoadLexicon", "OpenTTS"]

Parse = Callable[[str | bytes], ev.InboundEvent]
CodecFactory = Callable[[ev.StreamStarted], ev.OutboundCodec]
# The TTS the call speaks through (its owner's), held for the call's lifetime.
OpenTTS = Callable[[], contextlib.AbstractAsyncContextManager[Synthesize]]
# The call owner's pronunciation overrides, read when the call's TTS opens.
LoadLexicon = Callable[[], Awaitable[Lexicon]]
# Ends the call at the provider (REST), given the call id; None where no credentials are set.
ProviderHangup = Callable[[str], Awaitable[None]]
log = structlog.get_logger("bridge.call")
# Events waiting for the agent: past this they are dropped and counted (a stalled agent must
# not grow the call's memory with every 20 ms of caller audio it is told about).
MAX_AGENT_EVENTS = 256


class CallHooks(Protocol):
    """Where a call reports its life: the registry of calls, and metrics behind it."""

    def webhook_time(self, call_id: str) -> int | None: ...

    def started(self, session: CallSession) -> None: ...

    def utterance_done(self, utt: UtteranceTrace) -> None: ...

    def ended(self, session: CallSession) -> None: ...

    def refused(self, kind: str) -> None:
        """An input refused past a bound (counted by kind)."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Line:
    """What exists once the call's TTS is open: the outbound codec, sender and speaker."""

    codec: ev.OutboundCodec
    sender: PacedSender
    speaker: Speaker


class CallSession:
    def __init__(self, *, provider: str, parse: Parse, codec_for: CodecFactory, send: Send,
                 close: Callable[[], Awaitable[object]], open_tts: OpenTTS, agent: Agent,
                 settings: CallSettings, hooks: CallHooks,
                 provider_hangup: ProviderHangup | None = None, owner: str = "",
                 expected_call_id: str = "", load_lexicon: LoadLexicon | None = None,
                 stt: SpeechToText | None = None, barge_in_words: int = 0) -> None:
        """`stt`: the bridge's speech to text (None: none); `barge_in_words`: 0, the caller's
        voice interrupts the agent; n > 0, only n words of theirs do (needs `stt`)."""
        self.provider = provider
        self.owner = owner  # the user the call belongs to (its signed webhook's and path's)
        self._parse = parse
        self._codec_for = codec_for
        self._send = send
        self._close = close
        self._open_tts = open_tts
        self._agent = agent
        self._settings = settings
        self._hooks = hooks
        self._provider_hangup = provider_hangup
        self._load_lexicon = load_lexicon
        self._loop = asyncio.get_running_loop()
        self._resources = contextlib.AsyncExitStack()
        self.trace = CallTrace(call_id="", provider=provider, clock=time.monotonic_ns)
        self.trace.step("stream_connected")
        self.core = CallCore(self.trace, now=self._loop.time(),
                             expected_call_id=expected_call_id, start_timeout_s=START_TIMEOUT_S,
                             transcribing=stt is not None, barge_in_words=barge_in_words)
        self._stt = stt
        self._transcriber: Transcriber | None = None  # open from the start until it fails
        self._parts = Supervisor(self._part_failed)
        self._line: _Line | None = None  # set when the core goes LIVE
        self._vad = VoiceDetector()
        self._unspoken: list[Utterance] = []  # said while the TTS was still opening
        self._agent_inbox: asyncio.Queue[AgentEvent] = asyncio.Queue(MAX_AGENT_EVENTS)
        self._agent_events_dropped = 0
        self._played: dict[int, asyncio.Event] = {}  # live utterances' "it is over" events
        self._hung_up: asyncio.Future[None] | None = None  # set once a hang-up is asked for
        self._hangup_job: asyncio.Task[None] | None = None
        self._stop: asyncio.Future[str] = self._loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._arm_timer()
        self.ended = asyncio.Event()

    @property
    def call_id(self) -> str:
        return self.trace.call_id

    # -- CallControl -------------------------------------------------------------------------
    def _utterance(self, text: str, *, bounded: bool = True, audio: bytes = b"") -> Utterance:
        try:
            trace = self.core.admit_utterance(bounded=bounded)
        except CallBusy:
            self._hooks.refused("utterance_queue")
            raise
        utt = (Utterance.prepared(trace, audio) if audio
               else Utterance(trace, refused=self._hooks.refused))
        self._played[trace.index] = asyncio.Event()
        utt.push(text)
        if self._line is None:
            self._unspoken.append(utt)  # the call's TTS is still opening
        else:
            self._line.speaker.say(utt)
        return utt

    def say(self, text: str, *, bounded: bool = True) -> UtteranceTrace:
        """Speak `text` after what is queued; CallBusy past MAX_PENDING_UTTERANCES unless not
        `bounded` (a goodbye: said once, it must not be refused)."""
        utt = self._utterance(text, bounded=bounded)
        utt.end()
        return utt.trace

    def say_stream(self) -> Utterance:
        return self._utterance("")

    def clear(self) -> None:
        self._do(self.core.clear(self._unplayed_seconds()))

    def send_dtmf(self, digits: str) -> None:
        """Play the tones of `digits` after what is queued, as an utterance of their own (no
        TTS); bounded like a say (CallBusy), ValueError for what cannot be played."""
        self._utterance("", audio=dtmf_tones(digits))  # made first: a refusal admits nothing

    async def wait_played(self, utt: UtteranceTrace, timeout_s: float) -> bool:
        """Wait until the caller heard `utt` (its mark echoed) or it ended otherwise."""
        event = self._played.get(utt.index)
        if event is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await event.wait()
        return utt.outcome == "played"

    async def hangup(self, goodbye: str | None = None, *, reason: str = "hangup",
                     interrupt: bool = False) -> None:
        """Say goodbye (if any) and wait for it, end the call at the provider, close; the call
        ends with `reason`. `interrupt`: silence what is being said first, so the goodbye does
        not wait behind it (the bridge shutting down). Idempotent: a second call waits for the
        first (an agent's goodbye under way is not cut)."""
        if self._hung_up is None:
            self._hung_up = self._loop.create_future()
            if interrupt:
                self.clear()
            said = None
            if goodbye and self.core.start is not None and not self.core.over:
                said = self.say(goodbye, bounded=False)
            self._do(self.core.hang_up(said, self._loop.time(),
                                       self._settings.mark_timeout_s, reason))
            self._arm_timer()
        await asyncio.shield(self._hung_up)

    async def _end_at_provider(self, hung_up: asyncio.Future[None]) -> None:
        """The HangUp action: REST hang-up where credentials exist, then close the stream.
        Not one of the call's parts: it is what ends the call, and must outlive its teardown."""
        try:
            if self._provider_hangup is not None and self.call_id:
                try:
                    await self._provider_hangup(self.call_id)
                except BridgeError as exc:
                    log.warning("provider_hangup_failed", call_id=self.call_id, error=str(exc))
            await self._close()
        except Exception as exc:  # handed to whoever awaits hangup(), not dropped
            if not hung_up.done():
                hung_up.set_exception(exc)
        finally:
            if not hung_up.done():
                hung_up.set_result(None)

    # -- the stream --------------------------------------------------------------------------
    def receive(self, raw: str | bytes) -> None:
        """Handle one provider message now, inside the socket's read: nothing here waits."""
        if self._stop.done():
            return
        try:
            event = self._parse(raw)
        except ProtocolError as exc:
            self.core.malformed()
            log.warning("malformed_provider_message", call_id=self.call_id,
                        provider=self.provider, error=str(exc))
            return
        if isinstance(event, ev.MediaReceived):
            self._caller_audio(event.payload)
        elif isinstance(event, ev.MarkReceived):
            if self._line is not None and (utt := self._line.sender.mark_echoed(event.name)):
                self._do(self.core.heard(utt))
        elif isinstance(event, ev.StreamStarted):
            self._do(self.core.started(event))
        elif isinstance(event, ev.DtmfReceived):
            self._do(self.core.dtmf(event.digit))
        elif isinstance(event, ev.StreamStopped):
            self._do(self.core.stopped())

    def inactive(self) -> None:
        """The stream has been silent for the inactivity timeout: its peer is gone."""
        self._do(self.core.inactive())

    def _caller_audio(self, payload: bytes) -> None:
        if self.core.start is None:
            return
        self._agent.caller_audio(payload)
        if self._transcriber is not None:
            self._transcriber.audio(payload)
        for vad in self._vad.push(payload):
            if vad.kind == "speech_start":
                self._do(self.core.speech_started(vad.at_s, self._unplayed_seconds()))
                if self._transcriber is not None:
                    self._transcriber.speech_started(vad.at_s)
            else:
                self._do(self.core.speech_ended(vad.at_s))  # the endpoint is timed first
                if self._transcriber is not None:
                    self._transcriber.speech_ended(vad.at_s)

    # -- speech to text ----------------------------------------------------------------------
    def _open_transcriber(self) -> None:
        """At the stream's start rather than once the TTS is open: the caller may speak at
        once, and those words must not be lost to the TTS's opening."""
        if self._stt is None:
            return
        try:
            transcriber = self._stt.open(self.call_id, self._transcribed, self._stt_failed)
        except Exception as exc:  # a backend that cannot open costs this call its transcripts
            log.warning("stt_open_failed", call_id=self.call_id, backend=self._stt.name,
                        error=f"{type(exc).__name__}: {exc}")
            self._stt_failed("open_failed")
            return
        self._transcriber = transcriber
        self._resources.push_async_callback(self._close_transcriber, transcriber)

    def _transcribed(self, said: Transcript) -> None:
        self._do(self.core.transcript(said, self._unplayed_seconds()))

    def _stt_failed(self, reason: str) -> None:
        # It stays quiet from now on: no more feeding it (it closes with the call's resources).
        self._transcriber = None
        self._do(self.core.stt_failed(reason))

    async def _close_transcriber(self, transcriber: Transcriber) -> None:
        try:
            await transcriber.aclose()
        except Exception as exc:  # the call is over either way; its teardown must go on
            log.warning("stt_close_failed", call_id=self.call_id,
                        error=f"{type(exc).__name__}: {exc}")

    def _unplayed_seconds(self) -> float:
        return self._line.sender.unplayed_seconds() if self._line is not None else 0.0

    async def run(self, stream_ended: Awaitable[object]) -> None:
        """Live until the provider says stop, the stream ends or the call fails; then end
        everything. Messages arrive through `receive` meanwhile."""
        ended = asyncio.ensure_future(stream_ended)
        reason = "socket closed"
        try:
            await asyncio.wait((ended, self._stop), return_when=asyncio.FIRST_COMPLETED)
            if not self._stop.done():
                self._do(self.core.stream_closed())
            reason = self._stop.result()
        except asyncio.CancelledError:
            reason = "server shutdown"
            raise
        finally:
            ended.cancel()
            if ended.done() and not ended.cancelled() and (exc := ended.exception()):
                log.warning("call_stream_failed", call_id=self.call_id,
                            error=f"{type(exc).__name__}: {exc}")
            await self._finish(reason)

    # -- carrying out the core's actions ------------------------------------------------------
    def _do(self, actions: Iterable[Action]) -> None:
        for action in actions:
            if isinstance(action, Tell):
                self._tell(action.event)
            elif isinstance(action, Finished):
                self._finished(action.utterance)
            elif isinstance(action, Silence):
                self._silence()
            elif isinstance(action, OpenSpeech):
                self._opening(action.start)
            elif isinstance(action, Refused):
                if action.counted:
                    self._hooks.refused(action.kind)
                log.warning(action.kind, call_id=self.call_id, provider=self.provider,
                            detail=action.detail)
            elif isinstance(action, HangUp):
                assert self._hung_up is not None  # only hangup() leads the core to HangUp
                self._hangup_job = self._loop.create_task(
                    self._end_at_provider(self._hung_up), name=f"hangup-{self.call_id}")
            elif isinstance(action, End):
                if not self._stop.done():
                    self._stop.set_result(action.reason)

    def _arm_timer(self) -> None:
        """Wake the core at its next deadline (the start's, the goodbye's)."""
        if self._timer is not None:
            self._timer.cancel()
        deadline = self.core.next_deadline()
        self._timer = None if deadline is None else self._loop.call_at(deadline, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._do(self.core.tick(self._loop.time()))
        self._arm_timer()

    def _tell(self, event: AgentEvent) -> None:
        try:
            self._agent_inbox.put_nowait(event)
        except asyncio.QueueFull:
            self._agent_events_dropped += 1
            self._hooks.refused("agent_event")
            if self._agent_events_dropped == 1:  # once per call: the count is in the call line
                log.warning("agent_events_dropped", call_id=self.call_id,
                            event=type(event).__name__, queued=MAX_AGENT_EVENTS)

    def _piece_failed(self, utt: UtteranceTrace, text: str, error: BridgeError) -> None:
        reason = failure_reason(str(error))
        log.warning("tts_piece_failed", call_id=self.call_id, utterance=utt.index,
                    reason=reason, chars=len(text), error=str(error)[:300])
        self._do(self.core.piece_failed(utt, text, reason, str(error)[:300]))

    def _finished(self, utt: UtteranceTrace) -> None:
        event = self._played.pop(utt.index, None)
        if event is not None:
            event.set()
            self._hooks.utterance_done(utt)
            log.info("utterance", call_id=self.call_id, **utt.to_dict(self.trace.origin))

    def _silence(self) -> None:
        line = self._line
        if line is None:
            return
        line.sender.clear()
        line.speaker.interrupt()
        clear = line.codec.clear()

        async def send_clear() -> None:  # leaves before the next inbound message is read
            await self._send(clear)

        self._parts.spawn(f"clear-{self.call_id}", send_clear())

    def _opening(self, start: ev.StreamStarted) -> None:
        webhook_at = self._hooks.webhook_time(self.trace.call_id)
        if webhook_at is not None:
            self.trace.step("webhook_answered", at=webhook_at)
        self._parts.spawn(f"open-{self.call_id}", self._open_speech(self._codec_for(start)))
        self._open_transcriber()
        self._hooks.started(self)
        log.info("call_started", call_id=self.call_id, provider=self.provider,
                 stream_id=start.stream_id)

    async def _open_speech(self, codec: ev.OutboundCodec) -> None:
        """Open the call's TTS, then start the sender, the speaker and the agent. A task, so
        that the caller's audio keeps being read meanwhile."""
        try:
            synthesize = await self._resources.enter_async_context(self._open_tts())
        except Exception as exc:  # e.g. the store is down: this call fails, the bridge goes on
            log.exception("call_tts_unavailable", call_id=self.call_id)
            self._do(self.core.speech_unavailable(type(exc).__name__))
            return
        lexicon = await self._lexicon()
        sender = PacedSender(
            self._send, codec, Pacer(self._settings.lead_ms / 1000),
            max_frames=self._settings.max_frames_per_message, clock=self._loop.time,
        )
        speaker = Speaker(synthesize, sender, on_piece_failed=self._piece_failed,
                          lexicon=lexicon)
        self._line = _Line(codec, sender, speaker)
        self._do(self.core.speech_opened())
        for utt in self._unspoken:
            speaker.say(utt)
        self._unspoken.clear()
        self._parts.spawn(f"sender-{self.call_id}", sender.run())
        self._parts.spawn(f"speaker-{self.call_id}", speaker.run())
        self._parts.spawn(f"agent-{self.call_id}", self._agent_loop())

    async def _lexicon(self) -> Lexicon:
        """The owner's overrides; none when they cannot be read: the call speaks on without
        them rather than fail over a store hiccup (its TTS target was just read)."""
        if self._load_lexicon is None:
            return EMPTY
        try:
            return await self._load_lexicon()
        except Exception as exc:
            log.warning("call_pronunciation_unavailable", call_id=self.call_id,
                        error=f"{type(exc).__name__}: {exc}")
            return EMPTY

    async def _agent_loop(self) -> None:
        while True:
            event = await self._agent_inbox.get()
            try:
                await self._agent.handle(self, event)
            except CallBusy as exc:
                log.warning("agent_say_refused", call_id=self.call_id, reason=str(exc))
            except Exception:  # one agent failure must not end the call: logged, loop goes on
                log.exception("agent_failed", call_id=self.call_id,
                              event=type(event).__name__)

    def _part_failed(self, name: str, exc: BaseException) -> None:
        part = name.split("-", 1)[0]  # "sender-CA..." (call ids may hold "-")
        if isinstance(exc, ConnectionError):  # a send raced the provider closing the stream
            log.info("call_stream_gone", call_id=self.call_id, task=part)
            self._do(self.core.stream_closed())
            return
        log.warning("call_task_failed", call_id=self.call_id, task=part,
                    error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        self._do(self.core.part_failed(part, type(exc).__name__))

    async def _finish(self, reason: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await self._parts.aclose()
        await self._resources.aclose()
        self._do(self.core.ended(reason))
        if self.core.start is not None:
            try:
                await self._agent.handle(self, agent_events.CallEnded(
                    self.trace.end_reason or reason))
            except Exception:  # the call is over either way; the agent's bug is logged
                log.exception("agent_failed", call_id=self.call_id, event="CallEnded")
            await self._agent.close()
            self._hooks.ended(self)
        self.ended.set()
        log.info("call", owner=self.owner, agent_events_dropped=self._agent_events_dropped,
                 **self.trace.summary())
