"""Which new calls the bridge takes: a pure decision over what it holds and what its TTS can do.

A call answered past capacity would be answered into silence, so the answer webhook asks first.
A draining bridge (shutting down, bridge/web/drain_core.py) takes no new call ("draining");
otherwise three bounds, each with its own reason:

- ``max_calls``: calls held (live, plus answered calls whose stream has not come yet) against
  the configured maximum per bridge.
- ``tts_slow`` (measured): this bridge's recent urgent pieces (utterances' first clauses) took
  longer than the first-words bound to bring audio: admitted callers already wait too long.
- ``tts_capacity`` (announced): the calls waiting for first words now, plus this one, spread
  over the server's concurrent slots, each taking what the server says an urgent piece takes,
  after the work in those slots now (one piece more: a slot frees only when its current job
  ends), would start this call's first words after the bound. Urgent pieces overtake normal
  ones in the server's queue, so other calls' long replies count only through that one.

An admitted call holds a reservation from its webhook until its stream is live (or a bound
later, for a carrier that never connects), so a burst of webhooks cannot all pass on the same
empty count. The clock is injected (seconds, monotonic).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection

from bridge.silma.capacity import Capacity

RESERVATION_S = 30.0  # answered, stream not yet connected: carriers connect within seconds


@dataclasses.dataclass(frozen=True, slots=True)
class Admit:
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class Refuse:
    reason: str  # draining | max_calls | tts_slow | tts_capacity (a metric label)
    detail: str


class Admission:
    def __init__(self, *, max_calls: int, first_words_s: float,
                 reservation_s: float = RESERVATION_S) -> None:
        if max_calls < 0 or first_words_s <= 0 or reservation_s <= 0:
            raise ValueError("need max_calls >= 0 and positive first_words_s, reservation_s")
        self.max_calls = max_calls
        self.first_words_s = first_words_s
        self._reservation_s = reservation_s
        self._reserved: dict[str, float] = {}  # call id -> when the reservation lapses

    def started(self, call_id: str) -> None:
        """The call's stream is live: it counts as a live call from now on, not as reserved."""
        self._reserved.pop(call_id, None)

    def pending(self, now: float) -> int:
        """Admitted calls whose stream has not come yet (a reservation lapses at its bound)."""
        for call_id, until in list(self._reserved.items()):
            if until <= now:
                del self._reserved[call_id]
        return len(self._reserved)

    def decide(self, call_id: str, now: float, *, live: Collection[str], waiting: int,
               capacity: Capacity, draining: bool = False) -> Admit | Refuse:
        """Admit (and reserve a place for) `call_id`, or say why not. `live`: the ids of live
        calls; `waiting`: how many of them wait for their current utterance's first audio;
        `draining`: the bridge is shutting down."""
        pending = self.pending(now)
        if call_id in live or call_id in self._reserved:
            return Admit()  # a carrier's retried webhook: the call has its place already
        if draining:
            return Refuse("draining", "the bridge is shutting down")
        held = len(live) + pending
        if self.max_calls and held >= self.max_calls:
            return Refuse("max_calls", f"{held} calls held, at most {self.max_calls}")
        bound = self.first_words_s
        if capacity.first_audio_s is not None and capacity.first_audio_s > bound:
            return Refuse("tts_slow", f"first audio takes {capacity.first_audio_s:.2f} s lately,"
                                      f" over the {bound:g} s bound")
        if capacity.concurrency and capacity.urgent_piece_s:
            ahead = waiting + pending
            rounds = math.ceil((ahead + 1) / capacity.concurrency) + 1  # + the slots' current job
            expected = rounds * capacity.urgent_piece_s
            if expected > bound:
                return Refuse("tts_capacity",
                              f"{ahead} calls wait for first words on {capacity.concurrency} "
                              f"TTS slots of {capacity.urgent_piece_s:.2f} s: this one would "
                              f"start after {expected:.2f} s, over the {bound:g} s bound")
        self._reserved[call_id] = now + self._reservation_s
        return Admit()

