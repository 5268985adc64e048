"""The warm pool's decisions, with no I/O: which connection to hand out, which to retire, how
many to open. The async shell (pool.py) asks, then does what the returned Plan says.

Pure and synchronous so every rule is a unit test with an injected clock:
- waiters are served first come, first served;
- a connection is handed out only while it is ready, healthy, and younger than max_age;
- a connection nearing max_age is "stale": its replacement is opened in the background ahead of
  time, and once the replacement is ready the stale one is retired as soon as it is idle; one
  past max_age, or failing its health check, is never handed out again;
- the pool keeps `warm` fresh connections open even when idle, keeps one spare ready while
  under load, and never holds more than `size`;
- after a failed connect, further connects wait an exponentially growing, jittered delay; so
  they do after a connection lost before it served anything and within QUICK_LOSS_S of
  opening (a server that accepts the upgrade and closes at once, as SILMA's cloud does for a
  refused key): without it the pool would reconnect in a tight loop.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import random
from collections.abc import Callable

from bridge.settings import PoolSettings

QUICK_LOSS_S = 1.0


class SlotState(enum.Enum):
    CONNECTING = "connecting"
    READY = "ready"
    RETIRED = "retired"


@dataclasses.dataclass
class Slot:
    id: int
    state: SlotState
    created_at: float
    capacity: int = 1  # requests it may carry at once (multiplexing servers announce more)
    leases: int = 0
    healthy: bool = True
    last_health: str = "unchecked"
    last_health_at: float | None = None
    served: int = 0

    def age(self, now: float) -> float:
        return now - self.created_at


@dataclasses.dataclass
class Plan:
    """What the shell must do now."""

    open: int = 0
    close: list[int] = dataclasses.field(default_factory=list)
    grant: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # (waiter, slot)

    def __bool__(self) -> bool:
        return bool(self.open or self.close or self.grant)


class PoolCore:
    def __init__(self, limits: PoolSettings, *, rng: Callable[[], float] = random.random) -> None:
        if not 0 <= limits.warm <= limits.size or limits.size < 1:
            raise ValueError("pool needs 1 <= size and 0 <= warm <= size")
        self.limits = limits
        self.slots: dict[int, Slot] = {}
        self.waiters: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._next_id = 1
        self._rng = rng
        self.failures_in_a_row = 0
        self.quick_losses = 0  # connections in a row lost as soon as they opened
        self.retry_at = 0.0
        self.closed = False

    # -- views -------------------------------------------------------------------------------
    def count(self, state: SlotState) -> int:
        return sum(s.state is state for s in self.slots.values())

    @property
    def in_use(self) -> int:
        return sum(s.leases > 0 for s in self.slots.values())

    def _usable(self, slot: Slot, now: float) -> bool:
        return (slot.state is SlotState.READY and slot.healthy
                and slot.age(now) < self.limits.max_age_s)

    def _fresh(self, slot: Slot, now: float) -> bool:
        return self._usable(slot, now) and slot.age(now) < self.limits.renew_at_s

    def _free(self, now: float) -> Slot | None:
        """A usable slot with room: fresh before stale, least loaded, then oldest first."""
        candidates = [s for s in self.slots.values()
                      if self._usable(s, now) and s.leases < s.capacity]
        if not candidates:
            return None
        return min(candidates,
                   key=lambda s: (not self._fresh(s, now), s.leases, s.created_at))

    # -- events from the shell ----------------------------------------------------------------
    def new_slot(self, now: float) -> Slot:
        slot = Slot(self._next_id, SlotState.CONNECTING, now)
        self._next_id += 1
        self.slots[slot.id] = slot
        return slot

    def want(self, waiter: int, now: float) -> Plan:
        """A caller wants a connection. Granted at once if one is free, else queued FIFO."""
        self.waiters[waiter] = None
        return self.plan(now)

    def give_up(self, waiter: int, now: float) -> Plan:
        """A waiter timed out or was cancelled."""
        self.waiters.pop(waiter, None)
        return self.plan(now)

    def connected(self, slot_id: int, now: float, capacity: int) -> Plan:
        slot = self.slots[slot_id]
        slot.state = SlotState.READY
        slot.created_at = now
        slot.capacity = max(1, capacity)
        self.failures_in_a_row = 0
        self.retry_at = 0.0
        return self.plan(now)

    def connect_failed(self, slot_id: int, now: float) -> Plan:
        del self.slots[slot_id]
        self.failures_in_a_row += 1
        self.retry_at = now + self._backoff(self.failures_in_a_row)
        return self.plan(now)

    def _backoff(self, failures: int) -> float:
        delay = min(self.limits.backoff_max_s, self.limits.backoff_base_s * 2.0 ** (failures - 1))
        return delay * (0.5 + self._rng() / 2)  # jitter: 50-100% of the delay

    def released(self, slot_id: int, now: float, *, reusable: bool) -> Plan:
        slot = self.slots.get(slot_id)
        if slot is not None:
            slot.leases -= 1
            slot.served += 1
            self.quick_losses = 0  # a connection that served a request was not refused
            if not reusable:
                slot.healthy = False
        return self.plan(now)

    def lost(self, slot_id: int, now: float) -> Plan:
        """The connection closed under us (server restart, network)."""
        slot = self.slots.get(slot_id)
        if slot is not None:
            slot.healthy = False
            slot.last_health = "lost"
            if slot.served == 0 and slot.leases == 0 and slot.age(now) < QUICK_LOSS_S:
                self.quick_losses += 1
                self.retry_at = max(self.retry_at, now + self._backoff(self.quick_losses))
            else:
                self.quick_losses = 0
        return self.plan(now)

    def health(self, slot_id: int, now: float, ok: bool, detail: str) -> Plan:
        slot = self.slots.get(slot_id)
        if slot is not None:
            slot.healthy = slot.healthy and ok
            slot.last_health = detail
            slot.last_health_at = now
        return self.plan(now)

    def forget(self, slot_id: int) -> None:
        """The shell finished closing a retired slot."""
        self.slots.pop(slot_id, None)

    def close(self, now: float) -> Plan:
        self.closed = True
        return self.plan(now)

    # -- the one planning method ---------------------------------------------------------------
    def plan(self, now: float) -> Plan:
        plan = Plan()
        fresh_ready = sum(self._fresh(s, now) for s in self.slots.values())
        for slot in self.slots.values():
            if slot.state is not SlotState.READY or slot.leases:
                continue
            replaced = not self._fresh(slot, now) and fresh_ready >= self.limits.warm
            if self.closed or not self._usable(slot, now) or replaced:
                slot.state = SlotState.RETIRED
                plan.close.append(slot.id)
        if self.closed:
            return plan
        while self.waiters and (free := self._free(now)) is not None:
            waiter, _ = self.waiters.popitem(last=False)
            free.leases += 1
            plan.grant.append((waiter, free.id))
        if now >= self.retry_at:
            plan.open = self._to_open(now)
        return plan

    def _to_open(self, now: float) -> int:
        live = [s for s in self.slots.values() if s.state is not SlotState.RETIRED]
        connecting = sum(s.state is SlotState.CONNECTING for s in live)
        fresh = [s for s in live if self._fresh(s, now)]
        spare = sum(s.leases < s.capacity for s in fresh)
        wanted = max(
            self.limits.warm - len(fresh),                  # keep the warm minimum fresh
            (1 if fresh and not spare else 0),              # one ready ahead while under load
            len(self.waiters),                              # callers already waiting
        ) - connecting
        if self.failures_in_a_row or self.quick_losses:
            wanted = min(wanted, 1 - connecting)  # while the server is down, probe one at a time
        # Stale slots still hold a place until retired, but their replacement may take it.
        room = self.limits.size - len(live) + sum(not self._fresh(s, now) for s in live
                                                  if s.state is SlotState.READY)
        return max(0, min(wanted, room, self.limits.size - connecting - len(fresh)))

    def next_deadline(self, now: float) -> float | None:
        """When the plan may change with no event: a connection ageing out or a backoff ending."""
        times = [s.created_at + age for s in self.slots.values() if s.state is SlotState.READY
                 for age in (self.limits.renew_at_s, self.limits.max_age_s)
                 if s.created_at + age > now]
        if self.retry_at > now:
            times.append(self.retry_at)
        return min(times) if times else None
