"""One call's caller audio cut into utterances for a backend that transcribes whole ones.

The voice detector reports a start some frames after the speech really began (it waits for
several speech frames in a row), so the audio just before `speech_started` is kept in a short
pre-roll and put in front of the utterance: without it the first consonant is lost. An
utterance is bounded (`max_s`): a caller who talks on past it gets it cut there and handed out,
and what follows is a new utterance of the same speech. Every buffer is bounded; frames may be
of any length.

Pure: time is the amount of audio consumed (the clock the detector's `at_s` uses); no I/O, no
wall clock.
"""

from __future__ import annotations

import dataclasses

SAMPLE_RATE = 8000  # one mu-law byte per sample
DEFAULT_PREROLL_S = 0.4
DEFAULT_MAX_S = 30.0


@dataclasses.dataclass(frozen=True, slots=True)
class Utterance:
    """8 kHz mu-law audio of one utterance, `start_s`..`end_s` seconds into the call's audio.
    `cut`: it was cut at the length bound while the caller was still talking."""

    mulaw: bytes
    start_s: float
    end_s: float
    cut: bool = False

    @property
    def seconds(self) -> float:
        return len(self.mulaw) / SAMPLE_RATE


class UtteranceBuffer:
    def __init__(self, *, preroll_s: float = DEFAULT_PREROLL_S,
                 max_s: float = DEFAULT_MAX_S) -> None:
        if preroll_s < 0 or max_s <= preroll_s:
            raise ValueError(f"need 0 <= preroll_s < max_s, got {preroll_s}, {max_s}")
        self._preroll_bytes = round(preroll_s * SAMPLE_RATE)
        self._max_bytes = round(max_s * SAMPLE_RATE)
        self._consumed = 0  # bytes of caller audio seen, all told
        self._preroll = bytearray()  # the latest audio while no speech is on
        self._speech: bytearray | None = None  # the utterance being gathered
        self._speech_start = 0  # byte offset in the call's audio of its first byte

    @property
    def in_speech(self) -> bool:
        return self._speech is not None

    @property
    def consumed_s(self) -> float:
        return self._consumed / SAMPLE_RATE

    def audio(self, mulaw: bytes) -> list[Utterance]:
        """Take the next caller audio; returns the utterances cut at the length bound (almost
        always none)."""
        self._consumed += len(mulaw)
        if self._speech is None:
            self._preroll += mulaw
            excess = len(self._preroll) - self._preroll_bytes
            if excess > 0:
                del self._preroll[:excess]
            return []
        speech = self._speech
        cuts: list[Utterance] = []
        view = memoryview(mulaw)
        while view:
            room = self._max_bytes - len(speech)
            speech += view[:room]
            view = view[room:]
            if len(speech) >= self._max_bytes:
                cuts.append(self._take(speech, cut=True))
                speech = self._speech = bytearray()
        return cuts

    def speech_started(self) -> None:
        """The detector heard speech begin: the utterance starts with the pre-roll. A repeated
        start (already in speech) changes nothing."""
        if self._speech is not None:
            return
        self._speech = self._preroll
        self._speech_start = self._consumed - len(self._preroll)
        self._preroll = bytearray()

    def speech_ended(self) -> Utterance | None:
        """The detector found the end: the utterance so far, or None outside speech (an end
        with no start, or one right after a cut that left nothing)."""
        speech, self._speech = self._speech, None
        # The detector's endpoint lies a hangover after the last voice, so the audio up to here
        # is all of it; what the caller says next starts a fresh pre-roll.
        return self._take(speech, cut=False) if speech else None

    def _take(self, speech: bytearray, *, cut: bool) -> Utterance:
        start = self._speech_start
        self._speech_start = start + len(speech)
        return Utterance(bytes(speech), start / SAMPLE_RATE, self._speech_start / SAMPLE_RATE,
                         cut)
