"""The paced sender of one call: queued mu-law frames and marks leave at real-time pace.

Frames wait in an ordered outbox; each wake-up sends as many as the Pacer's lead allows, up to
`max_frames` per media message (fewer, larger messages are cheaper and Twilio plays any size).
A mark follows the last frame of each utterance; its echo means the caller heard it all.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Awaitable, Callable

from bridge.audio.framer import FRAME_BYTES
from bridge.call.pacing import Pacer
from bridge.telephony.events import OutboundCodec
from bridge.tracing.trace import UtteranceTrace

Send = Callable[[str], Awaitable[None]]


@dataclasses.dataclass(slots=True)
class _Frames:
    utt: UtteranceTrace
    data: bytes


@dataclasses.dataclass(slots=True)
class _Mark:
    utt: UtteranceTrace


class PacedSender:
    def __init__(self, send: Send, codec: OutboundCodec, pacer: Pacer, *, max_frames: int,
                 clock: Callable[[], float]) -> None:
        self._send = send
        self._codec = codec
        self._pacer = pacer
        self._max_bytes = max_frames * FRAME_BYTES
        self._clock = clock
        self._outbox: collections.deque[_Frames | _Mark] = collections.deque()
        self._queued_bytes = 0  # audio in the outbox
        self._wake = asyncio.Event()
        self._pending_marks: dict[str, UtteranceTrace] = {}
        self._sending: UtteranceTrace | None = None  # utterance whose frames are on the wire

    # -- producer side -----------------------------------------------------------------------
    def push_audio(self, utt: UtteranceTrace, data: bytes) -> None:
        if data:
            utt.audio_seconds += len(data) / FRAME_BYTES * self._pacer.frame_s
            self._outbox.append(_Frames(utt, data))
            self._queued_bytes += len(data)
            self._wake.set()

    def push_mark(self, utt: UtteranceTrace) -> None:
        self._outbox.append(_Mark(utt))
        self._wake.set()

    def clear(self) -> list[UtteranceTrace]:
        """Drop queued audio and forget pending marks; returns the utterances cut short."""
        cut = {item.utt.index: item.utt for item in self._outbox}
        cut.update({u.index: u for u in self._pending_marks.values()})
        self._outbox.clear()
        self._queued_bytes = 0
        self._pending_marks.clear()
        self._sending = None
        self._pacer.reset(self._clock())
        return list(cut.values())

    def mark_echoed(self, name: str) -> UtteranceTrace | None:
        """The utterance whose mark `name` the provider echoed: it played everything up to
        there. Unknown names (cleared, or never sent) are None."""
        return self._pending_marks.pop(name, None)

    @property
    def speaking(self) -> bool:
        """Audio is queued, on the wire, or not yet confirmed played."""
        return bool(self._outbox or self._pending_marks)

    def unplayed_seconds(self) -> float:
        """Audio sent that the provider has not played yet (by our playout model)."""
        return self._pacer.buffered(self._clock())

    def audio_runs_out_at(self) -> float:
        """When (this sender's clock) the caller will have heard all audio given to it so far,
        queued here or sent: in the past when the line has been quiet since then."""
        play_end = self._pacer.play_end
        if not self._queued_bytes:
            return play_end
        queued_s = self._queued_bytes / FRAME_BYTES * self._pacer.frame_s
        return max(play_end, self._clock()) + queued_s

    @property
    def pending_marks(self) -> int:
        return len(self._pending_marks)

    # -- the task ----------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            if not self._outbox:
                self._wake.clear()
                await self._wake.wait()
                continue
            item = self._outbox[0]
            if isinstance(item, _Mark):
                self._outbox.popleft()
                await self._send_mark(item.utt)
                continue
            now = self._clock()
            budget = self._pacer.budget(now) * FRAME_BYTES
            want = min(self._max_bytes, self._available_bytes(item.utt))
            if budget < want:
                # Sleep until a whole message fits rather than trickling single frames.
                await asyncio.sleep(max(0.0, self._pacer.wake_at(want // FRAME_BYTES) - now))
                continue
            await self._send_media(item.utt, self._take(want), now)

    def _available_bytes(self, utt: UtteranceTrace) -> int:
        total = 0
        for item in self._outbox:
            if isinstance(item, _Mark) or item.utt is not utt:
                break
            total += len(item.data)
            if total >= self._max_bytes:
                break
        return total

    def _take(self, nbytes: int) -> bytes:
        self._queued_bytes -= nbytes
        parts: list[bytes] = []
        while nbytes > 0:
            head = self._outbox[0]
            assert isinstance(head, _Frames)
            if len(head.data) <= nbytes:
                self._outbox.popleft()
                parts.append(head.data)
                nbytes -= len(head.data)
            else:
                parts.append(head.data[:nbytes])
                head.data = head.data[nbytes:]
                nbytes = 0
        return b"".join(parts)

    async def _send_media(self, utt: UtteranceTrace, data: bytes, now: float) -> None:
        continuing = self._sending is utt
        gap = self._pacer.sent(now, len(data) // FRAME_BYTES)
        if continuing and gap:
            utt.underruns += 1
        self._sending = utt
        utt.sent_seconds += len(data) / FRAME_BYTES * self._pacer.frame_s
        utt.note_lead(self._pacer.buffered(now))
        await self._send(self._codec.media(data))
        utt.step("first_frame_sent")

    async def _send_mark(self, utt: UtteranceTrace) -> None:
        name = f"utt-{utt.index}"
        self._pending_marks[name] = utt
        self._sending = None
        utt.step("last_frame_sent")
        await self._send(self._codec.mark(name))
