"""What speech-to-text is to a call: caller audio in, partial and final transcripts out.

A backend (`SpeechToText`) is built once per bridge from settings; it opens one `Transcriber`
per call. The call session feeds the transcriber every 20 ms frame of caller audio as it is
read (so `audio` must not block or await) and tells it where the voice detector found speech
to start and end: a backend that transcribes whole utterances (an HTTP transcription endpoint,
an offline decoder) does its work at `speech_ended`; a streaming one may use them only as
hints. Results come back through the `on_transcript` callback given at open, on the event
loop, in order; a backend that fails tells `on_failure` once with a fixed reason label and
stays quiet afterwards (the call goes on without transcripts, never fails over them). A
backend that transcribes whole utterances loses only the utterance when one request fails
(logged) and gives up after a few failures in a row ("timeout", "http_status", "bad_reply",
"unreachable", "overloaded", "decoder"); a streaming one gives up when its stream is gone for
good ("refused", "unreachable", "stream_lost"); "internal" is a bug.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol


@dataclasses.dataclass(frozen=True, slots=True)
class Transcript:
    """What the caller said. `final`: this text for `start_s`..`end_s` will not change;
    partials are replaced by the next partial or by the final of the same speech.
    `latency_s`: wall-clock seconds from the end of that speech (the detector's endpoint)
    until this transcript was known; 0 for partials that came before the end."""

    text: str
    final: bool
    start_s: float
    end_s: float
    latency_s: float = 0.0


OnTranscript = Callable[[Transcript], None]
OnFailure = Callable[[str], None]


class Transcriber(Protocol):
    """One call's speech recognition."""

    def audio(self, mulaw: bytes) -> None:
        """One frame of 8 kHz mu-law caller audio; must return at once."""

    def speech_started(self, at_s: float) -> None:
        """The voice detector heard speech begin `at_s` seconds into the caller's audio."""

    def speech_ended(self, at_s: float) -> None:
        """The voice detector found the end of that speech (an endpoint)."""

    async def aclose(self) -> None:
        """The call is over: stop, release connections; no callback after this returns."""


class SpeechToText(Protocol):
    """A configured backend, shared by the bridge's calls."""

    name: str

    def open(self, call_id: str, on_transcript: OnTranscript,
             on_failure: OnFailure) -> Transcriber: ...

    async def aclose(self) -> None:
        """The bridge is stopping: release what the backend shares between calls."""
