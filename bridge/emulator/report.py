"""What an emulated call measured, and how to save what the caller heard."""

import json
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bridge.audio.mulaw import ulaw2lin
from bridge.emulator.playout import BYTES_PER_SECOND


@dataclass
class UtteranceTiming:
    """One utterance as the caller experienced it. Latencies count from `requested_at`."""

    # "greeting", the text asked for, or, for one the bridge began unasked (the agent's own),
    # "agent reply to key N" (the key pressed before it) or "agent reply"
    label: str
    # Seconds since the stream started; for an agent reply, when the key it answers was
    # pressed, or (no key) when it began, its first-audio latency unknown
    requested_at: float
    first_audio_s: float | None = None  # until the first media of this utterance arrived
    playout_done_s: float | None = None  # until its mark was acknowledged or cleared
    cleared: bool = False  # cut by a clear: not played out, whatever the provider acknowledged


@dataclass
class CallReport:
    """The outcome of one emulated call. `ok` is False on an error or a protocol violation."""

    call_sid: str
    stream_sid: str
    provider: str = "twilio"
    duration_s: float = 0.0
    frames_received: int = 0  # outbound `media` messages (any multiple of 160 bytes each)
    bytes_received: int = 0  # mu-law bytes in them
    messages_received: int = 0  # every text frame the bridge sent
    marks_echoed: int = 0  # includes marks echoed because of a clear (Twilio)
    marks_dropped: int = 0  # pending marks a clear dropped without acknowledging them (Plivo)
    underruns: int = 0
    underrun_seconds: float = 0.0
    protocol_violations: list[str] = field(default_factory=list)
    utterances: list[UtteranceTiming] = field(default_factory=list)
    error: str | None = None  # why the call did not complete as planned
    recording: bytes = field(default=b"", repr=False)  # mu-law 8 kHz, as received

    @property
    def ok(self) -> bool:
        return self.error is None and not self.protocol_violations

    @property
    def audio_seconds(self) -> float:
        return self.bytes_received / BYTES_PER_SECOND

    def summary(self) -> str:
        lines = [
            f"{self.provider} call {self.call_sid}  stream {self.stream_sid}  "
            f"({self.duration_s:.2f} s)",
            f"  {'utterance':<32} {'asked at':>9} {'first audio':>12} {'played out':>11}",
        ]
        for u in self.utterances:
            done = _ms(u.playout_done_s) + (" (cleared)" if u.cleared else "")
            lines.append(
                f"  {_shorten(u.label, 32):<32} {u.requested_at:>7.2f} s "
                f"{_ms(u.first_audio_s):>12} {done:>11}"
            )
        lines += [
            f"audio received: {self.audio_seconds:.2f} s in {self.frames_received} media "
            f"messages ({self.bytes_received} bytes); {self.messages_received} messages in all",
            f"marks echoed: {self.marks_echoed}   dropped by a clear: {self.marks_dropped}   "
            f"underruns: {self.underruns} "
            f"({self.underrun_seconds * 1000:.0f} ms)   "
            f"protocol violations: {len(self.protocol_violations)}",
        ]
        lines += [f"  violation: {v}" for v in self.protocol_violations]
        if self.error:
            lines.append(f"error: {self.error}")
        return "\n".join(lines)

    def to_json(self) -> str:
        """Everything but the recording itself (its length is in bytes_received)."""
        data = asdict(self)
        del data["recording"]
        data["ok"] = self.ok
        return json.dumps(data, indent=2)


def write_wav(path: Path, mulaw: bytes) -> None:
    """Save 8 kHz mu-law as a 16-bit PCM mono WAV that any player opens."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(BYTES_PER_SECOND)
        out.writeframes(ulaw2lin(mulaw).astype("<i2").tobytes())


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
