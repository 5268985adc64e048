"""A phone provider's call leg, emulated: everything that does not depend on the provider.

`CallEmulator` plays the provider's side of one media stream; what differs between providers
is its `Wire` (wire.py), which twilio_wire and plivo_wire supply with a `CallEmulator`
subclass bound to it. Built to be cheap per frame because a load test runs hundreds of calls
in one process: media messages come from string templates, caller audio is base64-encoded once
for every call that sends it and leaves on one shared clock (clock.py), and each call wakes
once per message plus once per mark.
"""

import asyncio
import base64
import contextlib
import functools
import socket
from collections.abc import Callable, Coroutine
from typing import ClassVar, Self

import aiohttp

from bridge.emulator.clock import MediaClock
from bridge.emulator.playout import PlayoutBuffer
from bridge.emulator.report import CallReport, UtteranceTiming
from bridge.emulator.wire import FRAME_BYTES, FRAME_SECONDS, CallFailed, Wire, describe

DTMF_DIGITS = frozenset("0123456789*#")
_SILENCE_B64 = base64.b64encode(b"\xff" * FRAME_BYTES).decode()
_MAX_VIOLATIONS = 50  # a broken bridge repeats its mistake on every frame: keep the first few


@functools.lru_cache(maxsize=4)
def _base64_frames(audio: bytes) -> tuple[str, ...]:
    """The caller's audio as base64 20 ms frames, encoded once for every call that sends it."""
    return tuple(
        base64.b64encode(audio[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\xff")).decode()
        for i in range(0, len(audio), FRAME_BYTES)
    )


class CallEmulator:
    """One emulated call leg on a provider's media stream; subclasses set `wire_type`.

    `connect()` opens the stream, puts the caller's media on the media clock (real time, on a
    drift-free schedule) and starts two tasks: the reader (validates and plays out what the
    bridge sends) and the mark acknowledger (sleeps until the next mark's audio has played).
    End with `stop()` (the provider's hang-up) or `abort()` (the connection just drops). Also an
    async context manager.
    """

    wire_type: ClassVar[type[Wire]]

    def __init__(
        self,
        session: aiohttp.ClientSession,
        stream_url: str,
        *,
        call_sid: str | None = None,
        account_sid: str | None = None,
        parameters: dict[str, str] | None = None,
        caller_audio: bytes | None = None,
        auth_token: str | None = None,
        connect_url: str | None = None,
        record: bool = True,
        media_clock: MediaClock | None = None,
    ) -> None:
        """`parameters` go back to the bridge in the start message (Twilio customParameters,
        Plivo extra_headers). `connect_url` connects elsewhere than the answer's URL (e.g. past
        a TLS proxy) while the upgrade stays signed for the answer's URL. `media_clock` sends the
        caller's audio; a load test shares one among all its calls (default: one of its own)."""
        self.wire = self.wire_type(call_sid, account_sid, parameters)
        self.stream_url = stream_url
        self.call_sid = self.wire.call_sid
        self.account_sid = self.wire.account_sid
        self.stream_sid = self.wire.stream_sid
        self.parameters = self.wire.parameters
        self.playout = PlayoutBuffer(checkpoint_acks_cleared=self.wire.checkpoint_acks_cleared)
        self.recording = bytearray()
        self.utterances: list[UtteranceTiming] = []
        self.protocol_violations: list[str] = []
        self.frames_received = 0
        self.bytes_received = 0
        self.messages_received = 0
        self.marks_echoed = 0  # acknowledgements sent
        self.marks_settled = 0  # acknowledged, or dropped unacknowledged by a clear (Plivo)
        self.clear_times: list[float] = []  # when each clear from the bridge arrived (now())
        self.close_reason: str | None = None  # why the call ended or broke without our stop()
        self._session = session
        self._connect_url = connect_url or stream_url
        self._auth_token = auth_token
        self._caller_frames = _base64_frames(caller_audio or b"")
        self._record = record
        self._clock = media_clock or MediaClock()
        self._media_sent = 0  # caller frames sent; frame k is due at t0 + k * 20 ms
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._t0 = 0.0  # loop time when `start` was sent; report times count from it
        self._ended_at: float | None = None
        self._audio_idx = 0  # utterance receiving media: advances at each mark from the bridge
        self._receiving = False  # media of utterance _audio_idx came since the last mark or clear
        self._done_idx = 0  # utterance awaiting its mark's end: advances as marks settle
        self._key_pressed: tuple[str, float] | None = None  # the last key, unanswered yet
        self._violations_dropped = 0
        self._ending = False
        self._marks_changed = asyncio.Event()
        # Set whenever a mark settles, an utterance is cut or begins unasked, or the stream
        # ends: each waiter checks its own condition again.
        self._progress = asyncio.Event()
        self._first_media = asyncio.Event()
        self._cleared = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._acker: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.call_sid} media_in={self.frames_received} "
            f"marks_echoed={self.marks_echoed} closed={self.closed}>"
        )

    async def __aenter__(self) -> Self:
        """Only guarantees the call is ended on exit; `connect()` says how many greetings."""
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        await (self.abort() if exc_type else self.stop())

    @property
    def closed(self) -> bool:
        return self._reader is not None and self._reader.done()

    async def connect(self, *, greetings: int = 1) -> None:
        """Open the stream, send the provider's opening messages, start streaming caller audio.

        `greetings` utterances are expected from the bridge unprompted; their latencies count
        from `start`.
        """
        try:
            self._ws = await self._session.ws_connect(
                self._connect_url,
                headers=self.wire.upgrade_headers(self.stream_url, self._auth_token),
                compress=0,  # providers offer no permessage-deflate; it only costs CPU on audio
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise CallFailed(
                f"media stream upgrade at {self._connect_url} refused: HTTP {exc.status}"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise CallFailed(
                f"media stream {self._connect_url} unreachable: {describe(exc)}"
            ) from exc
        for text in self.wire.preamble():
            await self._send(text)
        self._t0 = asyncio.get_running_loop().time()
        for i in range(greetings):
            self.expect_utterance("greeting" if greetings == 1 else f"greeting {i + 1}")
        await self._send(self.wire.start())
        self._reader = asyncio.create_task(self._guarded(self._read, "reader"))
        self._clock.join(self, self._t0)
        self._acker = asyncio.create_task(self._guarded(self._ack_marks, "mark acknowledger"))

    def now(self) -> float:
        """Seconds since `start` was sent."""
        return asyncio.get_running_loop().time() - self._t0

    def expect_utterance(self, label: str) -> UtteranceTiming:
        """Note that an utterance was just asked for; the next unclaimed audio and mark are its."""
        timing = UtteranceTiming(label=label, requested_at=self.now())
        self.utterances.append(timing)
        return timing

    async def send_dtmf(self, digit: str) -> None:
        """The caller presses a key. What the bridge begins saying next, unasked, is reported
        as the agent's reply to it, its latency counted from the press."""
        if digit not in DTMF_DIGITS:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        now = self.now()
        self._key_pressed = (digit, now)
        await self._send(self.wire.dtmf(digit, round(now * 1000)))

    async def wait_for_marks(self, count: int) -> None:
        """Until `count` marks have settled in all: acknowledged, or (Plivo) dropped by a clear,
        which never acknowledges them. CallFailed if the stream ends first. Bound it with
        `asyncio.timeout`: a bridge may never mark."""
        await self._wait_until(lambda: self.marks_settled >= count)

    async def wait_for_utterances(self, count: int, *, begun: bool = False) -> None:
        """Until the first `count` utterances (those asked for and those the bridge began
        unasked, in the order they came) are over: played out to their mark, or cut by a clear
        before their mark was sent (it never will be). With `begun`, until they have begun:
        their audio or their mark came. CallFailed if the stream ends first. Bound it with
        `asyncio.timeout`."""
        await self._wait_until(lambda: (self._audio_idx + self._receiving if begun
                                        else self._done_idx) >= count)

    async def _wait_until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            if self.closed or self.close_reason is not None:
                raise CallFailed(self.close_reason or "the media stream has ended")
            self._progress.clear()
            await self._progress.wait()

    async def wait_first_media(self) -> None:
        """Until the bridge has sent audio. Bound it with `asyncio.timeout`."""
        await self._first_media.wait()

    async def wait_cleared(self) -> None:
        """Until the bridge has sent a clear (barge-in). Bound it with `asyncio.timeout`."""
        await self._cleared.wait()

    async def wait_closed(self) -> None:
        """Until the media stream has ended, whoever ended it. Cancelling the wait leaves the
        stream as it is (asyncio.wait, unlike gather, does not cancel the reader)."""
        if self._reader is not None:
            await asyncio.wait([self._reader])

    async def send_raw(self, text: str) -> None:
        """Send any text frame, e.g. a malformed message, as a misbehaving provider would."""
        await self._send(text)

    async def stop(self) -> None:
        """Hang up like the provider: its stop message if it has one, then a clean close."""
        if self._ws is None or self._ending:
            return
        self._ending = True
        self._cancel_tasks()
        if (text := self.wire.stop()) is not None:
            await self._send(text)
        await self._ws.close()
        await self._finish()

    async def abort(self) -> None:
        """Drop the connection with no stop message and no close handshake (a network failure)."""
        if self._ws is None or self._ending:
            return
        self._ending = True
        self._cancel_tasks()
        sock = self._ws.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(aiohttp.ClientError, OSError):
            await self._ws.close()
        await self._finish()

    def report(self) -> CallReport:
        end = self._ended_at if self._ended_at is not None else self.now()
        violations = list(self.protocol_violations)
        if self._violations_dropped:
            violations.append(f"... and {self._violations_dropped} more")
        return CallReport(
            call_sid=self.call_sid,
            stream_sid=self.stream_sid,
            provider=self.wire.provider,
            duration_s=end,
            frames_received=self.frames_received,
            bytes_received=self.bytes_received,
            messages_received=self.messages_received,
            marks_echoed=self.marks_echoed,
            marks_dropped=self.marks_settled - self.marks_echoed,
            underruns=self.playout.underruns,
            underrun_seconds=self.playout.underrun_seconds,
            protocol_violations=violations,
            utterances=list(self.utterances),
            error=self.close_reason,
            recording=bytes(self.recording),
        )

    # --- tasks ---

    async def _guarded(
        self, work: Callable[[], Coroutine[object, object, None]], what: str
    ) -> None:
        # Takes the coroutine function: a task cancelled before it starts then leaves no
        # never-awaited coroutine behind.
        try:
            await work()
        except Exception as exc:  # task root: a bug fails this call, never the process
            self.close_reason = f"emulator {what} failed: {exc!r}"
            self._progress.set()  # the waiters see close_reason and give up

    async def send_due_media(self, now: float) -> None:
        """Send the caller's frames due by `now` (the media clock calls this). After a stall
        every overdue frame goes at once, like after a network hiccup."""
        try:
            while self._t0 + self._media_sent * FRAME_SECONDS <= now:
                sent = self._media_sent
                await self._send(self.wire.media(sent + 1, sent * 20, self._caller_payload(sent)))
                self._media_sent += 1
        except Exception as exc:  # one call's bug must not stop the clock of every call
            self._clock.leave(self)
            self.close_reason = f"emulator media sender failed: {exc!r}"
            self._progress.set()

    def _caller_payload(self, index: int) -> str:
        return self._caller_frames[index] if index < len(self._caller_frames) else _SILENCE_B64

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    await self._on_text(msg.data)
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    self.messages_received += 1
                    self._violation(
                        f"binary frame ({self.wire.provider.capitalize()} accepts text frames only)"
                    )
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    if not self._ending:
                        self.close_reason = f"media stream failed: {self._ws.exception()}"
                    break
        finally:
            if not self._ending and self.close_reason is None:
                code = self._ws.close_code
                self.close_reason = f"the bridge closed the media stream (code {code})"
            if self._ended_at is None:
                self._ended_at = self.now()
            self._progress.set()  # wake the waiters so they see the end
            if not self._ending:
                self._cancel_tasks()

    async def _on_text(self, data: str) -> None:
        self.messages_received += 1
        msg, problems = self.wire.parse(data)
        for problem in problems:
            self._violation(problem)
        if msg is None:
            return
        now = self.now()
        if msg.event == "media":
            self._first_media.set()
            self.frames_received += 1
            self.bytes_received += len(msg.payload)
            if self._record:
                self.recording += msg.payload
            self.playout.receive(now, len(msg.payload))
            if not self._receiving:  # an utterance's first audio
                self._receiving = True
                if (utterance := self._utterance(self._audio_idx)) is None:
                    self._unasked(now, audio=True)
                else:
                    utterance.first_audio_s = now - utterance.requested_at
        elif msg.event == "mark":
            self.playout.mark(now, msg.name)
            if self._utterance(self._audio_idx) is None:  # one that brought no audio
                self._unasked(now, audio=False)
            self._audio_idx += 1
            self._receiving = False
            await self._ack(self.playout.due_marks(now), now, cleared=False)  # nothing queued
            self._marks_changed.set()
        else:
            self.clear_times.append(now)
            self._cleared.set()
            await self._ack(self.playout.due_marks(now), now, cleared=False)
            pending = self.playout.pending_marks
            acked = self.playout.clear(now)
            await self._ack(acked, now, cleared=True)
            # Marks a clear drops without acknowledging them (Plivo) still end their utterances.
            for _ in range(pending - len(acked)):
                self._settle(now, cleared=True)
            if (text := self.wire.cleared()) is not None:
                await self._send(text)
            # An utterance cut before its mark was sent will never be acknowledged: close it.
            if self._receiving:
                self.utterances[self._audio_idx].cleared = True
                self._audio_idx = self._done_idx = self._audio_idx + 1
                self._receiving = False
                self._progress.set()
            self._marks_changed.set()

    async def _ack_marks(self) -> None:
        while True:
            self._marks_changed.clear()
            due = self.playout.next_mark_due()
            if due is None:
                await self._marks_changed.wait()
                continue
            delay = due - self.now()
            if delay > 0:
                # Woken early by a new mark or a clear, which may bring the next due time closer.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._marks_changed.wait()
                continue
            now = self.now()
            await self._ack(self.playout.due_marks(now), now, cleared=False)

    # --- helpers ---

    async def _ack(self, names: list[str], now: float, *, cleared: bool) -> None:
        for name in names:
            await self._send(self.wire.played(name))
            self.marks_echoed += 1
            self._settle(now, cleared=cleared)

    def _settle(self, now: float, *, cleared: bool) -> None:
        """One mark is done with: the utterance it closes has played out or was cleared."""
        self.marks_settled += 1
        utterance = self._utterance(self._done_idx)
        if utterance is not None:
            utterance.playout_done_s = now - utterance.requested_at
            utterance.cleared = cleared
        self._done_idx = min(self._done_idx + 1, len(self.utterances))
        self._progress.set()

    async def _send(self, text: str) -> None:
        assert self._ws is not None
        # The reader notices the end of the stream and says why; a send racing it just stops.
        with contextlib.suppress(ConnectionError):
            await self._ws.send_str(text)

    def _utterance(self, index: int) -> UtteranceTiming | None:
        return self.utterances[index] if index < len(self.utterances) else None

    def _unasked(self, now: float, *, audio: bool) -> None:
        """An utterance the bridge began that nobody asked for (the agent's own reply), given
        a row of its own, so it never takes the label of the utterance asked for next. After a
        key press it is the reply to that key, timed from the press; otherwise the emulator
        cannot tell what it answers (the caller's speech, or nothing): its row begins when it
        did, with no first-audio latency. `audio`: it begins with audio (else with its mark)."""
        if self._key_pressed is not None:
            digit, pressed_at = self._key_pressed
            self._key_pressed = None
            timing = UtteranceTiming(label=f"agent reply to key {digit}", requested_at=pressed_at,
                                     first_audio_s=now - pressed_at if audio else None)
        else:
            timing = UtteranceTiming(label="agent reply", requested_at=now)
        self.utterances.append(timing)
        self._progress.set()

    def _violation(self, problem: str) -> None:
        if len(self.protocol_violations) < _MAX_VIOLATIONS:
            self.protocol_violations.append(problem)
        else:
            self._violations_dropped += 1

    def _cancel_tasks(self) -> None:
        self._clock.leave(self)
        if self._acker is not None and self._acker is not asyncio.current_task():
            self._acker.cancel()

    async def _finish(self) -> None:
        tasks = [t for t in (self._acker, self._reader) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._ended_at is None:
            self._ended_at = self.now()
