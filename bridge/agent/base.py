"""What an agent is: it is told what happens on a call and answers through the call's controls.

Events are plain records so a remote agent can receive them as JSON unchanged. Every agent kind
(scripted, remote, llm, an in-process `python:` factory) gets the same events and the same
controls: this module is the interface an agent author codes against (README, "Agents").
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

# What the caller said, from the call's speech-to-text (when one is configured): partials as
# they firm up, then one final per stretch of speech. Defined with the STT interface, which
# produces it; re-exported here because to an agent it is one event among the others.
from bridge.stt.base import Transcript as Transcript


@dataclasses.dataclass(frozen=True)
class CallStarted:
    call_id: str
    provider: str
    parameters: dict[str, str]


@dataclasses.dataclass(frozen=True)
class SpeechStarted:
    """The caller started speaking (voice activity detected)."""


@dataclasses.dataclass(frozen=True)
class SpeechEnded:
    duration_s: float


@dataclasses.dataclass(frozen=True)
class Dtmf:
    digit: str


@dataclasses.dataclass(frozen=True)
class PlaybackFinished:
    """The caller heard all of an utterance (its mark/checkpoint came back)."""

    utterance: int
    text: str


@dataclasses.dataclass(frozen=True)
class Interrupted:
    """The caller spoke over an utterance; only part of it was heard.

    `heard_text` is estimated from the share of the audio played (no word timings from TTS).
    """

    utterance: int
    text: str
    heard_text: str
    played_s: float
    audio_s: float


@dataclasses.dataclass(frozen=True)
class PlaybackFailed:
    """Part of an utterance will not be heard: its TTS request failed after every retry the
    deadline allowed. Told once per lost piece, as soon as it is given up; the rest of the
    utterance plays on, and no playback_finished follows for it.

    `reason` is a fixed label (busy, timeout, stall, lost, refused, mid_stream, other);
    `detail` is for people."""

    utterance: int
    text: str
    failed_text: str
    reason: str
    detail: str


@dataclasses.dataclass(frozen=True)
class CallEnded:
    reason: str


AgentEvent = (CallStarted | SpeechStarted | SpeechEnded | Dtmf | Transcript | PlaybackFinished
              | Interrupted | PlaybackFailed | CallEnded)

EVENT_NAMES: dict[type, str] = {
    CallStarted: "call_started", SpeechStarted: "speech_started", SpeechEnded: "speech_ended",
    Dtmf: "dtmf", Transcript: "transcript", PlaybackFinished: "playback_finished",
    Interrupted: "interrupted", PlaybackFailed: "playback_failed", CallEnded: "call_ended",
}


def event_json(event: AgentEvent) -> dict[str, Any]:
    return {"type": EVENT_NAMES[type(event)], **dataclasses.asdict(event)}


class SpeechStream(Protocol):
    """Text of one utterance arriving in pieces (a streaming agent)."""

    def push(self, text: str) -> None: ...

    def end(self) -> None: ...


class CallControl(Protocol):
    """What an agent may do on a call."""

    @property
    def call_id(self) -> str: ...

    def say(self, text: str) -> object:
        """Queue text to be spoken after whatever is already queued."""

    def say_stream(self) -> SpeechStream:
        """Queue an utterance whose text will arrive in pieces; speech starts with the first."""

    def clear(self) -> None:
        """Stop speaking now and drop whatever is queued."""

    async def hangup(self, goodbye: str | None = None) -> None:
        """Optionally say goodbye and wait until it is heard, then end the call."""

    def send_dtmf(self, digits: str) -> None:
        """Play the tones of `digits` (0-9, *, #, A-D; `w` waits half a second; at most 32)
        after whatever is queued, as an utterance of its own (an IVR on the far side hears them
        in band). Refused like a say past the call's bound; ValueError for what it cannot play."""


class Agent(Protocol):
    async def handle(self, call: CallControl, event: AgentEvent) -> None: ...

    def caller_audio(self, mulaw: bytes) -> None:
        """Each 8 kHz mu-law frame from the caller; must not block (it runs on the reader)."""

    async def close(self) -> None: ...
