"""Live calls by id, a bounded history of ended calls' traces, and recent webhook times.

Each call belongs to a user (its owner: the user of the signed path it came in on). Whoever asks
through the control API sees and controls only what `visible` allows: their own calls, or every
call for an operator. Handlers go through the `*_for(viewer, ...)` methods, so none can forget.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any, Protocol

from bridge.call.session import CallSession
from bridge.store import User
from bridge.tracing.metrics import BridgeMetrics
from bridge.tracing.trace import CallTrace, UtteranceTrace

HISTORY = 200
WEBHOOKS = 1000


class FleetCalls(Protocol):
    """Where the other bridges of a fleet learn of this one's calls (fleet.Membership)."""

    def call_started(self, call_id: str, owner: str) -> None: ...

    def call_ended(self, call_id: str, trace: dict[str, Any]) -> None: ...


def visible(viewer: User, owner: str) -> bool:
    return viewer.is_operator or viewer.id == owner


def _started_at(trace: CallTrace) -> float:
    """The trace's origin as wall-clock epoch seconds (sessions trace on time.monotonic_ns)."""
    return round(time.time() - (time.monotonic_ns() - trace.origin) / 1e9, 3)


class CallRegistry:
    """Implements the sessions' CallHooks."""

    def __init__(self, metrics: BridgeMetrics, history: int = HISTORY,
                 on_call_ended: Callable[[CallTrace], None] | None = None,
                 on_call_started: Callable[[str], None] | None = None,
                 fleet: FleetCalls | None = None) -> None:
        self.metrics = metrics
        self.fleet = fleet  # told of each call's start and end, for the other bridges
        self._on_call_ended = on_call_ended  # e.g. OpenTelemetry export
        self._on_call_started = on_call_started  # admission: the call's place is taken now
        self.live: dict[str, CallSession] = {}
        self._ended: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._history = history
        self._webhooks: collections.OrderedDict[str, int] = collections.OrderedDict()

    def webhook_answered(self, call_id: str, at_ns: int) -> None:
        self._webhooks[call_id] = at_ns
        while len(self._webhooks) > WEBHOOKS:
            self._webhooks.popitem(last=False)

    def webhook_time(self, call_id: str) -> int | None:
        return self._webhooks.pop(call_id, None)

    def refused(self, kind: str) -> None:
        self.metrics.refuse(kind)

    def started(self, session: CallSession) -> None:
        self.live[session.call_id] = session
        if self.fleet is not None:
            self.fleet.call_started(session.call_id, session.owner)
        self.metrics.call_started()
        if self._on_call_started is not None:
            self._on_call_started(session.call_id)

    def utterance_done(self, utt: UtteranceTrace) -> None:
        self.metrics.utterance_done(utt)

    def ended(self, session: CallSession) -> None:
        if self.live.get(session.call_id) is session:
            del self.live[session.call_id]
        self.metrics.call_ended(session.trace)
        if self._on_call_ended is not None:
            self._on_call_ended(session.trace)
        self._ended[session.call_id] = {"started_at": _started_at(session.trace),
                                        "owner": session.owner, **session.trace.to_dict()}
        if self.fleet is not None:
            self.fleet.call_ended(session.call_id, {"live": False,
                                                    **self._ended[session.call_id]})
        while len(self._ended) > self._history:
            self._ended.popitem(last=False)

    def trace(self, call_id: str) -> dict[str, Any] | None:
        """Any call's trace, for the bridge itself (tests, exporters): not for the API."""
        session = self.live.get(call_id)
        if session is not None:
            return {"live": True, "started_at": _started_at(session.trace),
                    "owner": session.owner, **session.trace.to_dict()}
        ended = self._ended.get(call_id)
        return {"live": False, **ended} if ended is not None else None

    def session_for(self, viewer: User, call_id: str) -> CallSession | None:
        """The live call `viewer` may control; None for an unknown or another tenant's."""
        session = self.live.get(call_id)
        return session if session is not None and visible(viewer, session.owner) else None

    def trace_for(self, viewer: User, call_id: str) -> dict[str, Any] | None:
        found = self.trace(call_id)
        return found if found is not None and visible(viewer, found["owner"]) else None

    def waiting_for_audio(self) -> int:
        """Live calls whose current utterance has sent no audio yet: the callers for whom an
        urgent TTS piece is being rendered now (what admission weighs a new call against)."""
        return sum(1 for s in self.live.values()
                   if (utts := s.trace.utterances) and utts[-1].outcome == "pending"
                   and "first_frame_sent" not in utts[-1].steps)

    def live_calls(self, viewer: User) -> list[dict[str, Any]]:
        """The live calls `viewer` may see: summaries (the call log line's fields), start times."""
        return [{"live": True, "started_at": _started_at(s.trace), "owner": s.owner,
                 **s.trace.summary()}
                for s in self.live.values() if visible(viewer, s.owner)]

    def recent(self, viewer: User) -> list[dict[str, Any]]:
        return [{"live": False, **trace} for trace in reversed(self._ended.values())
                if visible(viewer, trace["owner"])]
