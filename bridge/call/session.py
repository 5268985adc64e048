"""One call: reads the provider's stream, tells the agent, speaks, paces, traces, barges in.

The session is provider-neutral: a parse function turns raw messages into telephony events and a
codec factory builds outbound messages once the stream id is known. Its speaker, sender and agent
run as tasks that live exactly as long as the stream; every way a stream can end (stop, socket
closed, hang-up, server shutdown) goes through one `finally` that cancels them and ends the trace.
The reader never waits on the agent or on TTS: a provider drops audio from a slow reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Protocol

import structlog

from bridge.agent import base as agent_events
from bridge.agent.base import Agent, AgentEvent
from bridge.audio.vad import VoiceDetector
from bridge.call.pacing import Pacer
from bridge.call.sender import PacedSender, Send
from bridge.call.speaker import Speaker, Synthesize, Utterance
from bridge.errors import BridgeError, ProtocolError
from bridge.settings import CallSettings
from bridge.telephony import events as ev
from bridge.tracing.trace import CallTrace, UtteranceTrace

Parse = Callable[[str | bytes], ev.InboundEvent]
CodecFactory = Callable[[ev.StreamStarted], ev.OutboundCodec]
# The TTS the call speaks through (its owner's), held for the call's lifetime.
OpenTTS = Callable[[], contextlib.AbstractAsyncContextManager[Synthesize]]
# Ends the call at the provider (REST), given the call id; None where no credentials are set.
ProviderHangup = Callable[[str], Awaitable[None]]
log = structlog.get_logger("bridge.call")
# Utterances said but not yet heard (or ended otherwise): past this a say is refused. A caller
# pressing keys faster than the agent can answer must not queue minutes of speech.
MAX_PENDING_UTTERANCES = 8
# Events waiting for the agent: past this they are dropped and counted (a stalled agent must
# not grow the call's memory with every 20 ms of caller audio it is told about).
MAX_AGENT_EVENTS = 256
# A carrier sends start right after the upgrade; a stream that has sent no valid one by then is
# closed (it holds a socket and a spent token, and may be a probe).
START_TIMEOUT_S = 10.0


class CallBusy(BridgeError):
    """A say refused: the call already has as many utterances waiting as it may."""


class CallHooks(Protocol):
    """Where a call reports its life: the registry of calls, and metrics behind it."""

    def webhook_time(self, call_id: str) -> int | None: ...

    def started(self, session: CallSession) -> None: ...

    def utterance_done(self, utt: UtteranceTrace) -> None: ...

    def ended(self, session: CallSession) -> None: ...

    def refused(self, kind: str) -> None:
        """An input refused past a bound (counted by kind)."""


def heard_text(text: str, played_s: float, audio_s: float) -> str:
    """The words the caller probably heard: the played share of the text, cut at a word."""
    if audio_s <= 0 or played_s <= 0:
        return ""
    share = min(1.0, played_s / audio_s)
    if share >= 1.0:
        return text
    cut = text[: int(len(text) * share)]
    return cut.rsplit(" ", 1)[0] if " " in cut else ""


class CallSession:
    def __init__(self, *, provider: str, parse: Parse, codec_for: CodecFactory, send: Send,
                 close: Callable[[], Awaitable[object]], open_tts: OpenTTS, agent: Agent,
                 settings: CallSettings, hooks: CallHooks,
                 provider_hangup: ProviderHangup | None = None, owner: str = "",
                 expected_call_id: str = "") -> None:
        self.provider = provider
        self.owner = owner  # the user the call belongs to (its signed webhook's and path's)
        # The call id the stream was admitted for (its token's): a start naming another is
        # refused, so one call's token cannot carry another call.
        self._expected_call_id = expected_call_id
        self._parse = parse
        self._codec_for = codec_for
        self._send = send
        self._close = close
        self._open_tts = open_tts
        self._agent = agent
        self._settings = settings
        self._hooks = hooks
        self._provider_hangup = provider_hangup
        self._resources = contextlib.AsyncExitStack()
        self.trace = CallTrace(call_id="", provider=provider, clock=time.monotonic_ns)
        self.trace.step("stream_connected")
        self.start: ev.StreamStarted | None = None
        self.codec: ev.OutboundCodec | None = None
        self.sender: PacedSender | None = None
        self.speaker: Speaker | None = None
        self._vad = VoiceDetector()
        self._speech_started_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._unspoken: list[Utterance] = []  # said before the TTS was open
        self._agent_inbox: asyncio.Queue[AgentEvent] = asyncio.Queue(MAX_AGENT_EVENTS)
        self._agent_events_dropped = 0
        self._played: dict[int, asyncio.Event] = {}
        self._hangup: asyncio.Task[None] | None = None
        self._stop: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.ended = asyncio.Event()

    @property
    def call_id(self) -> str:
        return self.trace.call_id

    # -- CallControl -------------------------------------------------------------------------
    def _utterance(self, text: str, *, bounded: bool = True) -> Utterance:
        if self.start is None:
            raise RuntimeError("the call has not started")
        if bounded and len(self._played) >= MAX_PENDING_UTTERANCES:
            self._hooks.refused("utterance_queue")
            raise CallBusy(f"the call already has {len(self._played)} utterances waiting to "
                           "be heard; try again once one has played")
        utt = Utterance(self.trace.utterance(""))
        self._played[utt.trace.index] = asyncio.Event()
        utt.push(text)
        if self.speaker is None:
            self._unspoken.append(utt)  # the call's TTS is still opening
        else:
            self.speaker.say(utt)
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
        if self.sender is not None and (self.sender.speaking or
                                        (self.speaker is not None and self.speaker.busy)):
            self._interrupt()

    async def wait_played(self, utt: UtteranceTrace, timeout_s: float) -> bool:
        """Wait until the caller heard `utt` (its mark echoed) or it ended otherwise."""
        event = self._played.get(utt.index)
        if event is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await event.wait()
        return utt.outcome == "played"

    async def hangup(self, goodbye: str | None = None) -> None:
        """Say goodbye (if any) and wait for it, end the call at the provider, close. Idempotent:
        a second call waits for the first."""
        if self._hangup is None:
            self._hangup = asyncio.create_task(self._do_hangup(goodbye), name="hangup")
        await asyncio.shield(self._hangup)

    async def _do_hangup(self, goodbye: str | None) -> None:
        if goodbye and self.start is not None and not self.ended.is_set():
            await self.wait_played(self.say(goodbye, bounded=False),
                                   self._settings.mark_timeout_s)
        self.trace.end_reason = self.trace.end_reason or "hangup"
        if self._provider_hangup is not None and self.call_id:
            try:
                await self._provider_hangup(self.call_id)
            except BridgeError as exc:
                log.warning("provider_hangup_failed", call_id=self.call_id, error=str(exc))
        await self._close()

    # -- the stream --------------------------------------------------------------------------
    def receive(self, raw: str | bytes) -> None:
        """Handle one provider message now, inside the socket's read: nothing here waits."""
        if self._stop.done():
            return
        try:
            event = self._parse(raw)
        except ProtocolError as exc:
            self.trace.malformed_messages += 1
            log.warning("malformed_provider_message", call_id=self.call_id,
                        provider=self.provider, error=str(exc))
            return
        if isinstance(event, ev.MediaReceived):
            self._caller_audio(event.payload)
        elif isinstance(event, ev.MarkReceived):
            if self.sender is not None and (utt := self.sender.mark_echoed(event.name)):
                self._utterance_done(utt)
                self._tell(agent_events.PlaybackFinished(utt.index, utt.text))
        elif isinstance(event, ev.StreamStarted):
            self._started(event)
        elif isinstance(event, ev.DtmfReceived):
            self.trace.add_dtmf(event.digit)
            self._tell(agent_events.Dtmf(event.digit))
        elif isinstance(event, ev.StreamStopped):
            self._end("stop")

    def _end(self, reason: str) -> None:
        if not self._stop.done():
            self._stop.set_result(reason)

    async def run(self, stream_ended: Awaitable[object]) -> None:
        """Live until the provider says stop, the stream ends or the call fails; then end
        everything. Messages arrive through `receive` meanwhile."""
        ended = asyncio.ensure_future(stream_ended)
        reason = "socket closed"
        no_start = asyncio.get_running_loop().call_later(START_TIMEOUT_S, self._start_overdue)
        try:
            await asyncio.wait((ended, self._stop), return_when=asyncio.FIRST_COMPLETED)
            if self._stop.done():
                reason = self._stop.result()
        except asyncio.CancelledError:
            reason = "server shutdown"
            raise
        finally:
            no_start.cancel()
            ended.cancel()
            await self._finish(reason)

    def _start_overdue(self) -> None:
        if self.start is None:  # admitted, yet no valid start: the socket must not idle forever
            self._hooks.refused("no_start")
            self._end("no valid start message")

    def _caller_audio(self, payload: bytes) -> None:
        if self.start is None:
            return
        self._agent.caller_audio(payload)
        for vad in self._vad.push(payload):
            if vad.kind == "speech_start":
                self._speech_started_at = vad.at_s
                if self.sender is not None and (self.sender.speaking or
                                                (self.speaker is not None and self.speaker.busy)):
                    self.trace.barge_ins += 1
                    self._interrupt()
                self._tell(agent_events.SpeechStarted())
            else:
                started = self._speech_started_at or vad.at_s
                self._tell(agent_events.SpeechEnded(round(vad.at_s - started, 3)))

    def _interrupt(self) -> None:
        """Barge-in or an agent's clear: silence the caller's line at once, drop what is queued,
        stop synthesis, and tell the agent what was heard."""
        assert self.sender is not None and self.speaker is not None and self.codec is not None
        unplayed = self.sender.unplayed_seconds()
        cut = {u.index: u for u in self.sender.clear()}
        cut.update({u.index: u for u in self.speaker.interrupt()})
        self._send_soon(self.codec.clear())
        for utt in sorted(cut.values(), key=lambda u: -u.index):  # unplayed audio is the tail
            not_heard = min(utt.sent_seconds, unplayed)
            unplayed -= not_heard
            utt.played_seconds = utt.sent_seconds - not_heard
        for utt in sorted(cut.values(), key=lambda u: u.index):
            utt.step("interrupted")
            utt.finish("interrupted")
            played = utt.played_seconds or 0.0
            self._tell(agent_events.Interrupted(
                utt.index, utt.text, heard_text(utt.text, played, utt.audio_seconds),
                round(played, 3), round(utt.audio_seconds, 3)))
            self._utterance_done(utt)

    def _send_soon(self, message: str) -> None:
        """Send from synchronous code (a clear): it goes out before the next inbound message."""

        async def send() -> None:
            await self._send(message)

        self._spawn(send(), "clear")

    def _spawn(self, job: Coroutine[object, object, None], name: str) -> None:
        """A task of this call: cancelled when the call ends, forgotten once done. One that
        fails ends the call with its reason (the sender, speaker and agent loop run for the
        whole call: without one of them the caller would hear silence)."""
        task = asyncio.create_task(job, name=f"{name}-{self.call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        part = task.get_name().split("-", 1)[0]  # "sender-CA..." (call ids may hold "-")
        if isinstance(exc, ConnectionError):  # a send raced the provider closing the stream
            log.info("call_stream_gone", call_id=self.call_id, task=part)
            self._end("socket closed")
            return
        log.warning("call_task_failed", call_id=self.call_id, task=part,
                    error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        self._end(f"{part} failed ({type(exc).__name__})")

    def _tell(self, event: AgentEvent) -> None:
        try:
            self._agent_inbox.put_nowait(event)
        except asyncio.QueueFull:
            self._agent_events_dropped += 1
            self._hooks.refused("agent_event")
            if self._agent_events_dropped == 1:  # once per call: the count is in the call line
                log.warning("agent_events_dropped", call_id=self.call_id,
                            event=type(event).__name__, queued=MAX_AGENT_EVENTS)

    async def _agent_loop(self) -> None:
        while True:
            event = await self._agent_inbox.get()
            try:
                await self._agent.handle(self, event)
            except CallBusy as exc:
                log.warning("agent_say_refused", call_id=self.call_id, reason=str(exc))
            except Exception:  # one agent failure must not end the call
                log.exception("agent_failed", call_id=self.call_id,
                              event=type(event).__name__)

    def _started(self, start: ev.StreamStarted) -> None:
        if self.start is not None:
            self.trace.malformed_messages += 1
            log.warning("duplicate_start", call_id=self.call_id)
            return
        if self._expected_call_id and start.call_id != self._expected_call_id:
            self._hooks.refused("stream_call_mismatch")
            log.warning("stream_for_another_call", provider=self.provider,
                        admitted_for=self._expected_call_id)
            self._end("stream token names another call")
            return
        self.start = start
        self.trace.call_id = start.call_id or start.stream_id
        self.trace.step("start_received")
        webhook_at = self._hooks.webhook_time(self.trace.call_id)
        if webhook_at is not None:
            self.trace.step("webhook_answered", at=webhook_at)
        self.codec = self._codec_for(start)
        self._tell(agent_events.CallStarted(self.call_id, self.provider,
                                            dict(start.custom_parameters)))
        self._spawn(self._open_speech(start), "open")
        self._hooks.started(self)
        log.info("call_started", call_id=self.call_id, provider=self.provider,
                 stream_id=start.stream_id)

    async def _open_speech(self, start: ev.StreamStarted) -> None:
        """Open the call's TTS, then start the sender, the speaker and the agent. A task, so
        that the caller's audio keeps being read meanwhile."""
        try:
            synthesize = await self._resources.enter_async_context(self._open_tts())
        except Exception as exc:  # e.g. the store is down: this call fails, the bridge goes on
            log.exception("call_tts_unavailable", call_id=self.call_id)
            self._end(f"tts unavailable ({type(exc).__name__})")
            return
        assert self.codec is not None
        self.sender = PacedSender(
            self._send, self.codec, Pacer(self._settings.lead_ms / 1000),
            max_frames=self._settings.max_frames_per_message,
            clock=asyncio.get_running_loop().time,
        )
        self.speaker = Speaker(synthesize, self.sender, on_done=self._speech_queued)
        for utt in self._unspoken:
            self.speaker.say(utt)
        self._unspoken.clear()
        self._spawn(self.sender.run(), "sender")
        self._spawn(self.speaker.run(), "speaker")
        self._spawn(self._agent_loop(), "agent")

    def _speech_queued(self, utt: UtteranceTrace) -> None:
        if utt.outcome == "failed":
            self._utterance_done(utt)

    def _utterance_done(self, utt: UtteranceTrace) -> None:
        event = self._played.pop(utt.index, None)
        if event is not None:
            event.set()
            self._hooks.utterance_done(utt)
            log.info("utterance", call_id=self.call_id, **utt.to_dict(self.trace.origin))

    async def _finish(self, reason: str) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._resources.aclose()
        self.trace.end(reason)
        for utt in self.trace.utterances:
            self._utterance_done(utt)
        if self.start is not None:
            with contextlib.suppress(Exception):
                await self._agent.handle(self, agent_events.CallEnded(self.trace.end_reason
                                                                      or reason))
            await self._agent.close()
            self._hooks.ended(self)
        self.ended.set()
        log.info("call", owner=self.owner, agent_events_dropped=self._agent_events_dropped,
                 **self.trace.summary())
