"""The TTS servers behind one target: a warm pool per server, requests spread over them.

A ConnectionSource (client.py) over one SilmaPool per server. fleet_core.py decides which server
serves each request (least outstanding work per announced slot, avoiding the one that just
failed it, never an ejected one while another is up); this shell asks it, leases from that
server's pool, tells it how each request ended and what each health check found, and reports
per server. A target with one server is a fleet of one: nothing else changes for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Collection
from typing import Any

import structlog

from bridge.errors import TTSUnavailable
from bridge.silma.capacity import Capacity, RecentMean, announced
from bridge.silma.connection import ReplyCounters
from bridge.silma.connections import TTSConnection
from bridge.silma.endpoint import Endpoint
from bridge.silma.fleet_core import FleetCore
from bridge.silma.pool import SilmaPool
from bridge.silma.retry_core import RetryBudget, RetryPolicy

NO_CONNECTION_LOAD = 1e6  # beyond any real load per slot
log = structlog.get_logger("bridge.pool")


class Fleet:
    def __init__(self, pools: Collection[SilmaPool],
                 clock: Callable[[], float] | None = None) -> None:
        """`clock`: seconds, monotonic, for ejection backoffs (default: the loop's time)."""
        self.pools = {pool.endpoint.ws_url: pool for pool in pools}
        self._clock = clock
        self._core = FleetCore(list(self.pools))
        policy = RetryPolicy()
        self.retry_budget = RetryBudget(policy.budget_tokens, policy.budget_ratio)
        self._first_audio = RecentMean()
        for name, pool in self.pools.items():
            pool.on_health = self._health_hook(name)

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    @property
    def endpoint(self) -> Endpoint:
        """The server for what is not spread (the HTTP fallback, messages): the first up."""
        return self.pools[self._core.first_up(self._now())].endpoint

    @property
    def counters(self) -> ReplyCounters:
        """Where a client counts the HTTP replies it refused: its fallback server's pool."""
        return self.pools[self._core.first_up(self._now())].counters

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        for pool in self.pools.values():
            await pool.start()

    async def close(self) -> None:
        await asyncio.gather(*(pool.close() for pool in self.pools.values()))

    async def wait_ready(self, count: int, timeout_s: float) -> None:
        """`count` ready connections on every server."""
        await asyncio.gather(*(p.wait_ready(count, timeout_s) for p in self.pools.values()))

    # -- ConnectionSource --------------------------------------------------------------------
    async def acquire(self, avoid: Collection[str] = ()) -> TTSConnection:
        """A connection on the server fleet_core picks; a server with none to give is a fault
        (ejected) and the next one is asked, each at most once."""
        tried: set[str] = set(avoid)
        last: TTSUnavailable | None = None
        for _ in self.pools:
            name = self._core.pick(self._now(), self._load(), tried)
            if name in tried and last is not None:
                break  # nothing left that has not just failed
            tried.add(name)
            try:
                return await self.pools[name].acquire()
            except TTSUnavailable as exc:  # TTSRefused included: this server speaks HTTP only
                last = exc
                self._core.outcome(name, self._now(), "lost")
                log.warning("tts_server_unavailable", server=name, error=str(exc)[:200])
        raise last if last is not None else TTSUnavailable("no TTS server to ask")

    def release(self, conn: TTSConnection, failure: str | None = None) -> None:
        pool = self.pools.get(conn.server)
        if pool is None:
            return
        pool.release(conn, failure)
        self._core.outcome(conn.server, self._now(), failure)
        if failure is None:
            return
        state = self._core.servers[conn.server]
        if state.ejected(self._now()):
            log.warning("tts_server_ejected", server=conn.server, reason=failure,
                        for_s=round(state.ejected_until - self._now(), 1))

    def note_fallback(self) -> None:
        self.pools[self._core.first_up(self._now())].note_fallback()

    def note_first_audio(self, seconds: float) -> None:
        self._first_audio.add(self._now(), seconds)

    def _load(self) -> dict[str, float]:
        """Outstanding requests per announced slot (1 slot where a server announces none); a
        server with no connection at all (down, or reconnecting) comes after every other, so
        no request waits for its reconnection while another server can serve it now."""
        load = {}
        for name, pool in self.pools.items():
            slots, _ = announced(pool.server_health.get("server") or {})
            load[name] = pool.outstanding / (slots or 1) + (
                0.0 if pool.has_connections else NO_CONNECTION_LOAD)
        return load

    def _health_hook(self, name: str) -> Callable[[bool], None]:
        def on_health(ok: bool) -> None:
            if not ok:
                self._core.outcome(name, self._now(), "unhealthy")
        return on_health

    # -- what admission and operators see ----------------------------------------------------
    def capacity(self) -> Capacity:
        """The servers up now, together: their slots, the slowest urgent piece among them, and
        the first audio this fleet's callers waited for lately."""
        now = self._now()
        slots, pieces = 0, []
        for name, pool in self.pools.items():
            if self._core.servers[name].ejected(now):
                continue
            concurrency, piece_s = announced(pool.server_health.get("server") or {})
            slots += concurrency or 0
            if piece_s is not None:
                pieces.append(piece_s)
        return Capacity(concurrency=slots or None, urgent_piece_s=max(pieces, default=None),
                        first_audio_s=self._first_audio.mean(now))

    async def check_health(self) -> dict[str, Any]:
        """Every server's health now: the first that is not ok speaks for the fleet, else the
        first; `endpoint` names its server (HTTP base), "servers" holds each one's."""
        pools = list(self.pools.values())
        checked = [{"endpoint": pool.endpoint.http_base, **health} for pool, health in
                   zip(pools, await asyncio.gather(*(p.check_health() for p in pools)),
                       strict=True)]
        worst = next((h for h in checked if h["status"] != "ok"), checked[0])
        return {**worst, "servers": checked}

    def server_stats(self) -> list[dict[str, Any]]:
        """Per server: its pool's statistics and whether it is ejected (and why)."""
        now = self._now()
        stats = []
        for name, pool in self.pools.items():
            state = self._core.servers[name]
            stats.append({**pool.stats(), "ejected": state.ejected(now),
                          "ejected_for_s": round(max(0.0, state.ejected_until - now), 1),
                          "ejections": state.ejections, "last_fault": state.last_fault})
        return stats

    def stats(self) -> dict[str, Any]:
        """The fleet as one pool (what the settings page shows): counts summed over the
        servers, their connections together, the first unhealthy server's health (else the
        first's), and each server's own figures under "servers"."""
        servers = self.server_stats()
        total = dict(servers[0])
        for other in servers[1:]:
            for key, value in other.items():
                if type(value) is int and type(total.get(key)) is int:
                    total[key] += value
        warm = total["warm"]
        ratio = min(1.0, total["ready"] / warm) if warm else 1.0
        total.update(
            endpoint=", ".join(self.pools),
            connections=[c for server in servers for c in server["connections"]],
            server_health=next((s["server_health"] for s in servers
                                if s["server_health"]["status"] not in ("ok", "unchecked")),
                               servers[0]["server_health"]),
            ready_ratio=round(ratio, 3), ready_ratio_ok=ratio >= total["ready_ratio_target"],
            capacity=dataclasses.asdict(self.capacity()), servers=servers)
        return total
