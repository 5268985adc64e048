"""Several TTS servers behind one target, the decisions only (pure: the clock is injected).

Which server a request goes to: the one with the least outstanding work for its announced
slots (ties taken in turn, so a quiet fleet keeps every server warm and tested), among those
not ejected and not to be avoided (the retry loop avoids the server that just
failed it). A server that fails a request in a way that is its own fault (a stall, a lost
connection, no connection to be had) or fails its health check is ejected for a backoff that
doubles while it keeps failing; busy and timeout are load, not faults, and never eject (ejecting
a loaded server would pile its load on the others). When its backoff ends the server is
readmitted and the first request to it is its probe: a success clears its record, a fault ejects
it for twice as long. While every server is ejected or avoided, the one whose ejection ends
first is still tried rather than refusing the caller.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping

EJECT_S = (1.0, 30.0)  # first ejection, and the most a repeatedly failing server waits
FAULTS = frozenset({"stall", "lost", "unhealthy"})  # failures that are the server's own


@dataclasses.dataclass
class ServerState:
    ejected_until: float = 0.0
    failures: int = 0  # consecutive faults: they grow the backoff
    ejections: int = 0  # ever: for the stats
    last_fault: str | None = None

    def ejected(self, now: float) -> bool:
        return now < self.ejected_until


class FleetCore:
    def __init__(self, servers: Collection[str]) -> None:
        if not servers:
            raise ValueError("a fleet needs at least one server")
        self.servers: dict[str, ServerState] = {name: ServerState() for name in servers}
        self._order = {name: i for i, name in enumerate(self.servers)}
        self._turn = 0  # where the round over tied servers goes on from

    def pick(self, now: float, load: Mapping[str, float], avoid: Collection[str] = ()) -> str:
        """The server for the next request. `load`: outstanding requests per announced slot,
        per server (missing: 0)."""
        count = len(self.servers)

        def key(name: str) -> tuple[float, int]:
            return load.get(name, 0.0), (self._order[name] - self._turn) % count

        usable = [n for n, s in self.servers.items() if not s.ejected(now)]
        preferred = [n for n in usable if n not in avoid]
        if preferred:
            chosen = min(preferred, key=key)
        elif usable:
            chosen = min(usable, key=key)  # every usable server was avoided: try one again
        else:
            chosen = min(self.servers, key=lambda n: (self.servers[n].ejected_until, key(n)))
        self._turn = self._order[chosen] + 1
        return chosen

    def first_up(self, now: float) -> str:
        """The first server in order that is not ejected (else the one back soonest): for
        what is not spread, such as the HTTP fallback. Changes nothing."""
        up = [n for n, s in self.servers.items() if not s.ejected(now)]
        return up[0] if up else min(self.servers, key=lambda n: self.servers[n].ejected_until)

    def outcome(self, name: str, now: float, failure: str | None) -> None:
        """A request on `name` ended (`failure`: its retry_core.Kind value, None if it
        succeeded), or its health check failed ("unhealthy")."""
        state = self.servers.get(name)
        if state is None:
            return
        if failure is None:
            state.failures = 0
            return
        if failure not in FAULTS:
            return
        state.last_fault = failure
        if state.ejected(now):
            return  # the requests in flight when it failed: one incident, not several
        state.failures += 1
        state.ejections += 1
        backoff = min(EJECT_S[1], EJECT_S[0] * 2 ** (state.failures - 1))
        state.ejected_until = now + backoff
