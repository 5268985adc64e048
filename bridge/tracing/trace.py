"""Per-call latency trace: a pure model over an injected monotonic clock (nanoseconds).

A call records its own steps (webhook answered, stream connected, start received), one
UtteranceTrace per thing the agent said and one TurnTrace per time the caller spoke and the agent
answered. Durations are derived from step timestamps, so the record stays the single source of
truth for logs, the trace endpoint and metrics.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from typing import Any

Clock = Callable[[], int]
# Bounds: a trace lives in memory for the call and in the history of ended calls after it, so
# nothing a caller or an agent does may grow it without limit.
MAX_DTMF = 64  # digits kept (a menu path or a PIN); later ones are only counted
MAX_UTTERANCES = 200  # utterance traces kept; older finished ones fold into counts
MAX_TURNS = 200  # turns kept; older ones are only counted

CALL_STEPS = ("webhook_answered", "stream_connected", "start_received", "ended")
UTTERANCE_STEPS = (
    "text_received",
    "first_text",  # its first non-empty text: for a streamed reply, the agent's first token
    "text_split",
    "pool_wait_done",
    "request_sent",
    "first_audio",
    "synthesis_complete",
    "first_frame_sent",
    "last_frame_sent",
    "playout_finished",
    "interrupted",
)
# Derived durations: name -> (from step, to step).
DERIVED = {
    "time_to_first_audio_ms": ("text_received", "first_frame_sent"),
    "tts_first_byte_ms": ("request_sent", "first_audio"),
    "bridge_overhead_ms": ("first_audio", "first_frame_sent"),
    "pool_wait_ms": ("text_split", "pool_wait_done"),
    "synthesis_ms": ("request_sent", "synthesis_complete"),
    "send_ms": ("first_frame_sent", "last_frame_sent"),
    "playout_lag_ms": ("last_frame_sent", "playout_finished"),
    "total_ms": ("text_received", "playout_finished"),
}


# One turn: the caller stops speaking, the agent answers. Its own steps, then its reply's.
TURN_STEPS = ("speech_ended", "transcript_final")
# Derived per turn: name -> (from step, to step); "reply." names a step of the reply utterance.
# Together they split the answer's latency from the voice detector's endpoint to the first
# frame on the wire: speech to text, the agent (an LLM's first token), the rest of its first
# clause, the TTS's first audio, the bridge.
TURN_DERIVED = {
    "stt_ms": ("speech_ended", "transcript_final"),
    "agent_ms": ("transcript_final", "reply.first_text"),
    "first_piece_ms": ("reply.first_text", "reply.text_split"),
    "tts_first_audio_ms": ("reply.text_split", "reply.first_audio"),
    "bridge_ms": ("reply.first_audio", "reply.first_frame_sent"),
    "turn_ms": ("speech_ended", "reply.first_frame_sent"),
}


def _ms(start: int | None, end: int | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start) / 1e6, 3)


@dataclasses.dataclass
class UtteranceTrace:
    index: int
    text: str
    clock: Clock
    steps: dict[str, int] = dataclasses.field(default_factory=dict)
    audio_seconds: float = 0.0
    sent_seconds: float = 0.0
    played_seconds: float | None = None  # known when interrupted (estimated) or played
    underruns: int = 0
    max_lead_ms: float = 0.0
    outcome: str = "pending"  # pending | played | interrupted | failed | abandoned
    error: str | None = None
    fallback: bool = False
    # Requests tried again, by why the attempt failed (a retry_core.Kind value).
    retries: Counter[str] = dataclasses.field(default_factory=Counter)
    # Pieces the caller will not hear, given up after their retries: (reason, text).
    lost: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def retried(self, reason: str) -> None:
        self.retries[reason] += 1

    def piece_lost(self, reason: str, text: str, detail: str) -> None:
        self.lost.append((reason, text))
        if self.error is None:
            self.error = detail

    def step(self, name: str) -> None:
        """Record a step the first time it happens; later repeats keep the first timestamp."""
        if name not in UTTERANCE_STEPS:
            raise ValueError(f"unknown utterance step {name!r}")
        self.steps.setdefault(name, self.clock())

    def at(self, name: str) -> int | None:
        return self.steps.get(name)

    def note_lead(self, lead_s: float) -> None:
        self.max_lead_ms = max(self.max_lead_ms, round(lead_s * 1000, 3))

    def finish(self, outcome: str, error: str | None = None) -> None:
        if self.outcome == "pending":
            self.outcome = outcome
            self.error = error or self.error  # a lost piece's reason outlives a later cut

    def derived(self) -> dict[str, float | None]:
        return {name: _ms(self.at(a), self.at(b)) for name, (a, b) in DERIVED.items()}

    def to_dict(self, origin: int) -> dict[str, Any]:
        return {
            "index": self.index,
            "text": self.text,
            "outcome": self.outcome,
            "error": self.error,
            "fallback": self.fallback,
            "retries": dict(self.retries),
            "lost_text": [text for _, text in self.lost],
            "audio_seconds": round(self.audio_seconds, 3),
            "played_seconds": None if self.played_seconds is None
            else round(self.played_seconds, 3),
            "underruns": self.underruns,
            "max_lead_ms": self.max_lead_ms,
            # Step times relative to the call's first step, in ms, for a waterfall.
            "steps_ms": {name: _ms(origin, t) for name, t in self.steps.items()},
            **self.derived(),
        }


@dataclasses.dataclass
class TurnTrace:
    """The caller spoke, the agent answered: the endpoint, the final transcript (when the call
    has speech to text) and the first utterance the agent said after them (its reply).
    The caller's words are not kept (a trace outlives the call): only how many there were."""

    index: int
    clock: Clock
    steps: dict[str, int] = dataclasses.field(default_factory=dict)
    words: int = 0
    reply: UtteranceTrace | None = None

    def step(self, name: str, at: int | None = None) -> None:
        """Record a step the first time it happens, now or `at` (the clock's time of it)."""
        if name not in TURN_STEPS:
            raise ValueError(f"unknown turn step {name!r}")
        self.steps.setdefault(name, self.clock() if at is None else at)

    def at(self, name: str) -> int | None:
        if name.startswith("reply."):
            return self.reply.at(name.removeprefix("reply.")) if self.reply else None
        return self.steps.get(name)

    def derived(self) -> dict[str, float | None]:
        derived = {name: _ms(self.at(a), self.at(b)) for name, (a, b) in TURN_DERIVED.items()}
        if derived["agent_ms"] is None:  # no transcript (no speech to text): from the endpoint
            derived["agent_ms"] = _ms(self.at("speech_ended"), self.at("reply.first_text"))
        return derived

    def to_dict(self, origin: int) -> dict[str, Any]:
        return {
            "index": self.index,
            "words": self.words,
            "reply_utterance": None if self.reply is None else self.reply.index,
            "steps_ms": {name: _ms(origin, t) for name, t in self.steps.items()},
            **self.derived(),
        }


@dataclasses.dataclass
class CallTrace:
    call_id: str
    provider: str
    clock: Clock
    steps: dict[str, int] = dataclasses.field(default_factory=dict)
    utterances: list[UtteranceTrace] = dataclasses.field(default_factory=list)
    malformed_messages: int = 0
    barge_ins: int = 0
    dtmf: list[str] = dataclasses.field(default_factory=list)
    dtmf_dropped: int = 0
    turns: list[TurnTrace] = dataclasses.field(default_factory=list)
    turns_dropped: int = 0
    # Why the call's speech to text stopped (a backend's fixed label), if it did.
    stt_failure: str | None = None
    end_reason: str | None = None
    # Utterances folded out of `utterances` (MAX_UTTERANCES): their outcomes and underruns.
    folded: Counter[str] = dataclasses.field(default_factory=Counter)
    _count: int = 0  # utterances ever begun: kept plus folded

    def step(self, name: str, at: int | None = None) -> None:
        if name not in CALL_STEPS:
            raise ValueError(f"unknown call step {name!r}")
        self.steps.setdefault(name, self.clock() if at is None else at)

    def utterance(self, text: str) -> UtteranceTrace:
        utt = UtteranceTrace(self._count, text, self.clock)
        self._count += 1
        utt.step("text_received")
        self.utterances.append(utt)
        if len(self.utterances) > MAX_UTTERANCES:
            self._fold_oldest_finished()
        return utt

    def _fold_oldest_finished(self) -> None:
        for i, old in enumerate(self.utterances):
            if old.outcome != "pending":
                del self.utterances[i]
                self.folded[old.outcome] += 1
                self.folded["underruns"] += old.underruns
                return

    def turn(self) -> TurnTrace:
        turn = TurnTrace(len(self.turns) + self.turns_dropped, self.clock)
        self.turns.append(turn)
        if len(self.turns) > MAX_TURNS:
            del self.turns[0]
            self.turns_dropped += 1
        return turn

    def add_dtmf(self, digit: str) -> None:
        if len(self.dtmf) < MAX_DTMF:
            self.dtmf.append(digit)
        else:
            self.dtmf_dropped += 1

    def end(self, reason: str) -> None:
        self.step("ended")
        self.end_reason = self.end_reason or reason
        for utt in self.utterances:
            utt.finish("abandoned")

    @property
    def origin(self) -> int:
        starts = list(self.steps.values()) + [u.steps["text_received"] for u in self.utterances]
        return min(starts) if starts else 0

    def summary(self) -> dict[str, Any]:
        """The call's canonical log line fields."""
        ttfa = [v for u in self.utterances if (v := u.derived()["time_to_first_audio_ms"])]
        return {
            "call_id": self.call_id,
            "provider": self.provider,
            "end_reason": self.end_reason,
            "duration_ms": _ms(self.origin, self.steps.get("ended")),
            "utterances": self._count,
            "barge_ins": self.barge_ins,
            "interrupted": self.folded["interrupted"]
            + sum(u.outcome == "interrupted" for u in self.utterances),
            "failed": self.folded["failed"] + sum(u.outcome == "failed" for u in self.utterances),
            "underruns": self.folded["underruns"] + sum(u.underruns for u in self.utterances),
            "malformed_messages": self.malformed_messages,
            "turns": len(self.turns) + self.turns_dropped,
            "stt_failure": self.stt_failure,
            "first_ttfa_ms": ttfa[0] if ttfa else None,
            "max_ttfa_ms": max(ttfa) if ttfa else None,
            "webhook_to_start_ms": _ms(self.steps.get("webhook_answered"),
                                       self.steps.get("start_received")),
        }

    def to_dict(self) -> dict[str, Any]:
        origin = self.origin
        return {
            **self.summary(),
            "steps_ms": {name: _ms(origin, t) for name, t in self.steps.items()},
            "dtmf": list(self.dtmf),
            "dtmf_dropped": self.dtmf_dropped,
            "utterance_traces": [u.to_dict(origin) for u in self.utterances],
            "turn_traces": [t.to_dict(origin) for t in self.turns],
        }
