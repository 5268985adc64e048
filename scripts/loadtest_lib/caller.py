"""The load test's caller: one emulated Twilio or Plivo call leg, built to cost the generator
as little per call as the wire allows.

It plays the same part as the emulator's CallEmulator (bridge/emulator/call.py), with the
same messages (the emulator's own wire classes build them, and its templates the media), the
same jitter buffer (bridge/emulator/playout.py: underruns, when each mark falls due) and the
same report (bridge/emulator/report.py: TTFA per utterance, marks echoed), so the load test
measures what it measured before. What it leaves out is the per-message machinery that made
the generator's core, not the bridge's, the limit at 500 calls:

- the WebSocket is a plain non-blocking socket framed here (wsframe.py), not aiohttp's client;
  once open it is served by the shared clock (shared_clock.py): on its ticks the bridge's
  messages are read and handled in place (no future, no task wake-up, no async iterator per
  message) and the caller's frames, built from templates (media_frames.py), are written with
  one `send` each;
- the bridge's media messages are read for their size only (outbound.py), 1 in 64 checked
  strictly;
- marks are acknowledged from one timer per call (`loop.call_at`), not a task.

The answer webhook and the say requests stay on aiohttp: a few per call, not 50 a second.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import socket
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import aiohttp

from bridge.emulator.playout import PlayoutBuffer
from bridge.emulator.plivo_wire import PlivoWire
from bridge.emulator.report import CallReport, UtteranceTiming
from bridge.emulator.twilio_wire import TwilioWire
from bridge.emulator.wire import CallFailed, Wire
from loadtest_lib import wsframe
from loadtest_lib.media_frames import SILENCE_B64, MediaTemplate
from loadtest_lib.outbound import OutboundReader
from loadtest_lib.shared_clock import SharedClock

FRAME_SECONDS = 0.020
WIRES: dict[str, type[Wire]] = {"twilio": TwilioWire, "plivo": PlivoWire}
CLOSE_TIMEOUT_S = 5.0  # for the bridge's close frame after ours (aiohttp's ws_close above)
# Caller audio the bridge has not taken off the socket yet (past the kernel's buffers), beyond
# which frames are dropped (and said so): a bridge that stopped reading must not grow the
# generator without bound.
MAX_WRITE_BUFFER = 4 * 1024 * 1024
READ_BYTES = 256 * 1024  # one recv a tick: ~2 s of the bridge's media at once
_MAX_VIOLATIONS = 50


class Caller:
    """One call leg. `connect()` opens the stream; then, on `clock`'s ticks, the bridge's
    messages are handled and caller audio goes out; marks are echoed when their audio has
    played. End it with `stop()` (the carrier's hang-up)."""

    def __init__(self, wire: Wire, payloads: Sequence[bytes], clock: SharedClock) -> None:
        self.wire = wire
        self.call_sid = wire.call_sid
        self.playout = PlayoutBuffer(checkpoint_acks_cleared=wire.checkpoint_acks_cleared)
        self.utterances: list[UtteranceTiming] = []
        self.protocol_violations: list[str] = []
        self.frames_received = 0
        self.bytes_received = 0
        self.messages_received = 0
        self.marks_echoed = 0
        self.marks_settled = 0  # acknowledged, or dropped unacknowledged by a clear (Plivo)
        self.clear_times: list[float] = []
        self.close_reason: str | None = None
        self.closed = False  # the connection is gone
        self._payloads = payloads
        self._clock = clock
        self._reader = OutboundReader(wire.provider, wire.stream_sid, wire.parse)
        self._template = (
            MediaTemplate.plivo(wire.stream_sid, wire.extra_headers)
            if isinstance(wire, PlivoWire)
            else MediaTemplate.twilio(wire.stream_sid)
        )
        self._frames = wsframe.FrameReader()
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = None
        self._out = bytearray()  # written, not yet taken by the kernel (the bridge lags)
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._settled: asyncio.Future[None] = self._loop.create_future()
        self._ack_timer: asyncio.TimerHandle | None = None
        self._ack_due: float | None = None
        self._t0 = 0.0  # loop time of `start`
        self._ts_base = 0  # media timestamps count from it (Plivo: wall-clock ms at start)
        self._sent = 0  # caller frames sent; frame k is due at t0 + k * 20 ms
        self._dropped = 0  # frames not written: the bridge stopped reading
        self._audio_idx = 0  # utterance receiving media: advances at each mark from the bridge
        self._done_idx = 0  # utterance awaiting its mark's end: advances as marks settle
        self._violations_dropped = 0
        self._ending = False
        self._ended_at: float | None = None

    # --- the caller's side ---------------------------------------------------------------

    async def connect(self, stream_url: str, *, greetings: int = 1) -> None:
        """Open the media stream the answer named, send the carrier's opening messages, start
        the caller's audio. CallFailed when the stream cannot be opened."""
        url = urlsplit(stream_url)
        if url.scheme != "ws" or url.hostname is None:
            raise CallFailed(f"the load test's caller speaks plain ws:// only, not {stream_url}")
        path = url.path + (f"?{url.query}" if url.query else "")
        sock = self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a frame goes when written
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        headers = self.wire.upgrade_headers(stream_url, None)
        try:
            await self._loop.sock_connect(sock, (url.hostname, url.port or 80))
            await self._loop.sock_sendall(sock, wsframe.upgrade_request(url.netloc, path, key,
                                                                        headers))
            head = bytearray()
            while (end := head.find(b"\r\n\r\n")) < 0:
                if len(head) > wsframe.MAX_HEAD_BYTES or not (data := await self._loop.sock_recv(
                        sock, 4096)):
                    raise CallFailed(f"media stream {stream_url}: no upgrade response")
                head += data
        except OSError as exc:
            raise CallFailed(f"media stream {stream_url} unreachable: {exc}") from exc
        if (problem := wsframe.upgrade_problem(bytes(head[:end]), key)) is not None:
            raise CallFailed(f"media stream {stream_url}: {problem}")
        for text in self.wire.preamble():
            self._send(text)
        self._t0 = self._loop.time()
        if self.wire.provider == "plivo":  # its media timestamps are Unix ms from `start`
            self._ts_base = time.time_ns() // 1_000_000
        for i in range(greetings):
            self.expect_utterance("greeting" if greetings == 1 else f"greeting {i + 1}")
        self._send(self.wire.start())
        self._clock.join(self, self._t0)
        self._clock.watch(sock.fileno(), self)
        if rest := bytes(head[end + 4 :]):  # what came with the 101 (nothing, from the bridge)
            self._on_frames(rest)

    def now(self) -> float:
        """Seconds since `start` was sent."""
        return self._loop.time() - self._t0

    def expect_utterance(self, label: str) -> UtteranceTiming:
        """An utterance was just asked for; the next unclaimed audio and mark are its."""
        timing = UtteranceTiming(label=label, requested_at=self.now())
        self.utterances.append(timing)
        return timing

    async def wait_for_marks(self, count: int) -> None:
        """Until `count` marks have settled; CallFailed if the stream ends first. Bound it
        with `asyncio.timeout`."""
        while self.marks_settled < count:
            if self.closed or self.close_reason is not None:
                raise CallFailed(self.close_reason or "the media stream has ended")
            if self._settled.done():
                self._settled = self._loop.create_future()
            await self._settled

    async def stop(self) -> None:
        """Hang up like the carrier: its stop message if it has one, then the close
        handshake (bounded), then the connection is dropped."""
        if self._sock is None or self._ending:
            return
        self._ending = True
        self._quiet()
        if not self.closed:
            if (text := self.wire.stop()) is not None:
                self._send(text)
            self._write(wsframe.client_frame(wsframe.close_payload(1000), wsframe.OP_CLOSE))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await asyncio.shield(self._lost)
        self._ended_at = self._ended_at if self._ended_at is not None else self.now()
        self.abort()

    def abort(self) -> None:
        """Drop the connection (also a setup that did not finish)."""
        self._ending = True
        self._quiet()
        sock, self._sock = self._sock, None
        if sock is not None:
            if sock.fileno() >= 0:
                self._clock.unwatch(sock.fileno())
            sock.close()
        self._gone(None)

    def report(self) -> CallReport:
        end = self._ended_at if self._ended_at is not None else self.now()
        violations = list(self.protocol_violations)
        if self._violations_dropped:
            violations.append(f"... and {self._violations_dropped} more")
        return CallReport(
            call_sid=self.call_sid,
            stream_sid=self.wire.stream_sid,
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
        )

    # --- the clock's side ----------------------------------------------------------------

    def send_due(self, now: float) -> None:
        """Send the caller's frames due by `now`; after a stall every overdue frame goes at
        once, like after a network hiccup. The hot path of the whole generator (25,000 calls a
        second at 500 calls): the common case, one frame the kernel takes whole, is inline."""
        k = self._sent
        if self._t0 + k * FRAME_SECONDS > now or self._sock is None or self.closed:
            return
        wire, payloads = self.wire, self._payloads
        while True:
            self._sent = k + 1
            wire.seq += 1  # the wire's own count: its start, echoes and clears share it
            frame = self._template.frame(wire.seq, k + 1, self._ts_base + k * 20,
                                         payloads[k] if k < len(payloads) else SILENCE_B64)
            if self._out:  # the bridge lags: behind what waits, or dropped past the bound
                if len(self._out) > MAX_WRITE_BUFFER:
                    self._dropped += 1
                    if self._dropped == 1:
                        self._violation("the bridge stopped reading: caller audio dropped")
                else:
                    self._write(frame)
            else:
                try:
                    sent = self._sock.send(frame)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError as exc:
                    self._gone(exc)
                    return
                if sent < len(frame):
                    self._out += frame[sent:]
            k += 1
            if self._t0 + k * FRAME_SECONDS > now or self.closed:
                return

    # --- the clock's side: reading ----------------------------------------------------

    def on_readable(self) -> None:
        """The socket has data (or has ended): read it, handle every whole frame in it."""
        if self._sock is None:
            return
        try:
            data = self._sock.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._gone(exc)
            return
        if not data:
            self._gone(None)
            return
        self._on_frames(data)

    def _gone(self, exc: Exception | None) -> None:
        """The connection has ended (the bridge closed it, it broke, or we dropped it)."""
        if self.closed:
            return
        self.closed = True
        if self._ended_at is None:
            self._ended_at = self.now() if self._t0 else 0.0
        if not self._ending and self.close_reason is None:
            self.close_reason = (
                f"media stream failed: {exc}" if exc else "the bridge closed the media stream"
            )
        if not self._lost.done():
            self._lost.set_result(None)
        self._quiet()
        self._wake()
        sock = self._sock
        if sock is not None and sock.fileno() >= 0:
            self._clock.unwatch(sock.fileno())

    # --- what the bridge sends -----------------------------------------------------------

    def _on_frames(self, data: bytes) -> None:
        try:
            frames = self._frames.feed(data)
        except wsframe.FrameError as exc:
            self.close_reason = f"media stream broken: {exc}"
            self._gone(None)
            return
        for opcode, payload in frames:
            if opcode == wsframe.OP_TEXT:
                self._on_text(payload)
            elif opcode == wsframe.OP_BINARY:
                self.messages_received += 1
                name = self.wire.provider.capitalize()
                self._violation(f"binary frame ({name} accepts text frames only)")
            elif opcode == wsframe.OP_PING:
                self._write(wsframe.client_frame(payload, wsframe.OP_PONG))
            elif opcode == wsframe.OP_CLOSE:
                self._on_close(payload)

    def _on_close(self, payload: bytes) -> None:
        if not self._ending:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            self.close_reason = f"the bridge closed the media stream (code {code})"
            self._write(wsframe.client_frame(payload[:2], wsframe.OP_CLOSE))
        self._gone(None)  # the close handshake is done (ours answered, or theirs came back)

    def _on_text(self, raw: bytes) -> None:
        self.messages_received += 1
        msg, problems = self._reader.read(raw)
        for problem in problems:
            self._violation(problem)
        if msg is None:
            return
        now = self.now()
        if msg.event == "media":
            size = self._reader.media_bytes
            self.frames_received += 1
            self.bytes_received += size
            self.playout.receive(now, size)
            utterance = self._utterance(self._audio_idx)
            if utterance is not None and utterance.first_audio_s is None:
                utterance.first_audio_s = now - utterance.requested_at
        elif msg.event == "mark":
            self.playout.mark(now, msg.name)
            self._audio_idx = min(self._audio_idx + 1, len(self.utterances))
            self._ack(self.playout.due_marks(now), now, cleared=False)
            self._arm_ack()
        else:  # clear
            self.clear_times.append(now)
            self._ack(self.playout.due_marks(now), now, cleared=False)
            pending = self.playout.pending_marks
            acked = self.playout.clear(now)
            self._ack(acked, now, cleared=True)
            # Marks a clear drops without acknowledging them (Plivo) still end their utterances.
            for _ in range(pending - len(acked)):
                self._settle(now, cleared=True)
            if (text := self.wire.cleared()) is not None:
                self._send(text)
            # An utterance cut before its mark was sent will never be acknowledged: close it.
            cut = self._utterance(self._audio_idx)
            if cut is not None and cut.first_audio_s is not None:
                cut.cleared = True
                self._audio_idx = self._done_idx = min(self._audio_idx + 1, len(self.utterances))
            self._arm_ack()

    # --- marks ---------------------------------------------------------------------------

    def _arm_ack(self) -> None:
        """One timer per call, at the oldest pending mark's due time."""
        due = self.playout.next_mark_due()
        if due == self._ack_due:
            return
        if self._ack_timer is not None:
            self._ack_timer.cancel()
        self._ack_due = due
        self._ack_timer = None if due is None else self._loop.call_at(self._t0 + due, self._on_due)

    def _on_due(self) -> None:
        self._ack_timer = self._ack_due = None
        now = max(self.now(), self.playout.next_mark_due() or 0.0)  # a timer a hair early
        self._ack(self.playout.due_marks(now), now, cleared=False)
        self._arm_ack()

    def _ack(self, names: list[str], now: float, *, cleared: bool) -> None:
        for name in names:
            self._send(self.wire.played(name))
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
        self._wake()

    # --- helpers -------------------------------------------------------------------------

    def _send(self, text: str) -> None:
        self._write(wsframe.client_frame(text.encode()))

    def _write(self, frame: bytes) -> None:
        """Send `frame` now; what the kernel does not take waits for the next write."""
        sock = self._sock
        if sock is None or self.closed:
            return
        out = self._out
        if out:
            out += frame
            frame = bytes(out)
            out.clear()
        try:
            sent = sock.send(frame)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._gone(exc)
            return
        if sent < len(frame):
            out += frame[sent:]

    def _wake(self) -> None:
        if not self._settled.done():
            self._settled.set_result(None)

    def _quiet(self) -> None:
        """No more caller audio or mark echoes."""
        self._clock.leave(self)
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = self._ack_due = None

    def _utterance(self, index: int) -> UtteranceTiming | None:
        return self.utterances[index] if index < len(self.utterances) else None

    def _violation(self, problem: str) -> None:
        if len(self.protocol_violations) < _MAX_VIOLATIONS:
            self.protocol_violations.append(problem)
        else:
            self._violations_dropped += 1


async def open_call(
    http: aiohttp.ClientSession,
    base: str,
    provider: str,
    payloads: Sequence[bytes],
    clock: SharedClock,
    *,
    greetings: int = 1,
) -> Caller:
    """Ring the bridge as `provider` does (its answer webhook, through the emulator's wire)
    and open the media stream the answer names. CallFailed / ProtocolError when no call
    could be set up; bound it with `asyncio.timeout` (a cancelled setup drops the socket)."""
    cls = WIRES[provider]
    answer = await cls.answer(http, f"{base}{cls.answer_path}", None)
    caller = Caller(cls(answer.call_sid, answer.account_sid, answer.parameters), payloads, clock)
    try:
        await caller.connect(answer.stream_url, greetings=greetings)
    except BaseException:
        caller.abort()
        raise
    return caller
