"""The warm pool: pre-connected WebSockets to one SILMA endpoint, shared by every call using it.

All decisions live in PoolCore (pool_core.py); this shell only performs them: it opens and closes
connections in background tasks, resolves waiting callers' futures, watches connections for loss,
and wakes up when a connection ages out or a backoff ends. Closing is shielded from cancellation
so a cancelled caller never leaks a socket.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import ssl
import statistics
import time
from typing import Any

import aiohttp
import structlog

from bridge.errors import TTSUnavailable
from bridge.silma.connection import SilmaConnection, TTSRefused
from bridge.silma.endpoint import Endpoint
from bridge.silma.pool_core import Plan, PoolCore, PoolLimits, SlotState

READY_RATIO_TARGET = 0.8
log = structlog.get_logger("bridge.pool")


class SilmaPool:
    """A ConnectionSource (see client.py) that keeps connections warm."""

    def __init__(self, session: aiohttp.ClientSession, endpoint: Endpoint, *, api_key: str,
                 limits: PoolLimits, connect_timeout_s: float, acquire_timeout_s: float,
                 health_interval_s: float, ssl_context: ssl.SSLContext | bool = True) -> None:
        self.endpoint = endpoint
        self._session = session
        self._api_key = api_key
        self._connect_timeout_s = connect_timeout_s
        self._acquire_timeout_s = acquire_timeout_s
        self._health_interval_s = health_interval_s
        self._ssl = ssl_context
        self._core = PoolCore(limits)
        self._conns: dict[int, SilmaConnection] = {}
        self._slot_of: dict[int, int] = {}  # id(conn) -> slot id
        self._waiters: dict[int, asyncio.Future[SilmaConnection]] = {}
        self._waiter_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()  # replaced after each change: waiters see every one
        self._maintainer: asyncio.Task[None] | None = None
        self._acquire_waits: collections.deque[float] = collections.deque(maxlen=1000)
        self.failures = 0
        self.fallbacks = 0
        self.refused = False  # the server answered but refused WebSocket: use HTTP
        self.last_error: str | None = None
        self.server_health: dict[str, Any] = {"status": "unchecked"}
        self._started_at = time.time()

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Begin warming up; returns at once (callers wait in acquire if they come early)."""
        self._run(self._core.plan(self._now()))
        self._maintainer = asyncio.create_task(self._maintain(), name="pool-maintainer")

    async def close(self) -> None:
        """Drain: idle sockets close now, leased ones when their request ends or is cancelled."""
        if self._maintainer is not None:
            self._maintainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintainer
        self._run(self._core.close(self._now()))
        for future in self._waiters.values():
            future.cancel()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in list(self._conns.values()):
            await asyncio.shield(conn.close())
        self._conns.clear()

    # -- ConnectionSource --------------------------------------------------------------------
    async def acquire(self) -> SilmaConnection:
        if self.refused:
            raise TTSRefused("TTS server refuses WebSocket; using HTTP")
        started = self._now()
        waiter = next(self._waiter_ids)
        future: asyncio.Future[SilmaConnection] = asyncio.get_running_loop().create_future()
        self._waiters[waiter] = future
        try:
            self._run(self._core.want(waiter, started))
            async with asyncio.timeout(self._acquire_timeout_s):
                conn = await future
        except BaseException as exc:
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release(future.result())  # granted just as we were cancelled
            else:
                self._run(self._core.give_up(waiter, self._now()))
            if isinstance(exc, TimeoutError):
                raise TTSUnavailable(
                    f"no TTS connection within {self._acquire_timeout_s}s") from None
            raise
        finally:
            self._waiters.pop(waiter, None)
        self._acquire_waits.append(self._now() - started)
        return conn

    def release(self, conn: SilmaConnection) -> None:
        slot = self._slot_of.get(id(conn))
        if slot is not None:
            self._run(self._core.released(slot, self._now(), reusable=conn.usable))

    def note_fallback(self) -> None:
        self.fallbacks += 1

    # -- performing plans --------------------------------------------------------------------
    def _run(self, plan: Plan) -> None:
        for waiter, slot in plan.grant:
            future = self._waiters.get(waiter)
            if future is None or future.done():
                # The caller left between the decision and now: hand the lease back.
                self._run(self._core.released(slot, self._now(), reusable=True))
            else:
                future.set_result(self._conns[slot])
        for slot in plan.close:
            self._spawn(self._close_slot(slot))
        for _ in range(plan.open):
            self._spawn(self._open_slot(self._core.new_slot(self._now()).id))
        if plan:
            self._wake.set()
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_ready(self, count: int, timeout_s: float) -> None:
        """Until at least `count` connections are ready (start-up, tests). TimeoutError else."""
        async with asyncio.timeout(timeout_s):
            while self._core.count(SlotState.READY) < count:
                await self._changed.wait()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open_slot(self, slot: int) -> None:
        try:
            conn = await SilmaConnection.open(
                self._session, self.endpoint, api_key=self._api_key,
                timeout_s=self._connect_timeout_s, heartbeat_s=self._health_interval_s,
                ssl=self._ssl)
        except TTSUnavailable as exc:
            self.failures += 1
            self.last_error = str(exc)
            self.refused = isinstance(exc, TTSRefused)
            log.warning("tts_connect_failed", endpoint=self.endpoint.ws_url, error=str(exc))
            self._run(self._core.connect_failed(slot, self._now()))
            self._wake.set()  # the maintainer must wake when the backoff ends
            if self.refused:
                self._fail_waiters(exc)
            return
        self.refused = False
        self._conns[slot] = conn
        self._slot_of[id(conn)] = slot
        conn.on_closed = lambda: self._lost(slot)
        self._run(self._core.connected(slot, self._now(), conn.max_in_flight))
        self._wake.set()  # a new ageing deadline

    def _fail_waiters(self, exc: BaseException) -> None:
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(exc)

    def _lost(self, slot: int) -> None:
        if not self._core.closed:
            self._run(self._core.lost(slot, self._now()))

    async def _close_slot(self, slot: int) -> None:
        conn = self._conns.pop(slot, None)
        if conn is not None:
            self._slot_of.pop(id(conn), None)
            conn.on_closed = None
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close())
        self._core.forget(slot)

    async def _maintain(self) -> None:
        """Wake at the next ageing/backoff deadline or health check; re-plan; check health."""
        next_health = self._now()
        while True:
            now = self._now()
            if now >= next_health:
                await self.check_health()
                next_health = self._now() + self._health_interval_s
            deadline = min(d for d in (self._core.next_deadline(now), next_health) if d)
            self._wake.clear()
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that
            # races the event, and close() would then wait on this task forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, deadline - self._now())):
                    await self._wake.wait()
            self._run(self._core.plan(self._now()))

    async def check_health(self) -> dict[str, Any]:
        """The server's health endpoint, plus whether each pooled socket is still open."""
        started = self._now()
        try:
            async with self._session.get(
                self.endpoint.health_url, ssl=self._ssl,
                headers={"Authorization": f"Bearer {self._api_key}"} if self._api_key else {},
                timeout=aiohttp.ClientTimeout(total=self._connect_timeout_s),
            ) as response:
                body = await response.json(content_type=None) if response.status == 200 else {}
                status = "ok" if response.status == 200 and body.get("ready", True) else \
                    f"HTTP {response.status}"
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            status, body = f"unreachable: {type(exc).__name__}", {}
        now = self._now()
        self.server_health = {"status": status, "latency_ms": round((now - started) * 1000, 1),
                              "checked_at": time.time(), "server": body}
        for slot, conn in list(self._conns.items()):
            self._run(self._core.health(slot, now, conn.usable,
                                        "open" if conn.usable else "closed"))
        return self.server_health

    # -- statistics --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        now = self._now()
        core = self._core
        ready = core.count(SlotState.READY)
        live = ready + core.count(SlotState.CONNECTING)
        waits = sorted(self._acquire_waits)

        def pct(q: float) -> float | None:
            return round(waits[min(len(waits) - 1, int(q * len(waits)))] * 1000, 3) \
                if waits else None

        ratio = (ready / core.limits.warm) if core.limits.warm else 1.0
        return {
            "endpoint": self.endpoint.ws_url,
            "size": core.limits.size,
            "warm": core.limits.warm,
            "total": live,
            "ready": ready,
            "in_use": core.in_use,
            "connecting": core.count(SlotState.CONNECTING),
            "waiting": len(core.waiters),
            "requests_served": sum(c.requests_served for c in self._conns.values()),
            "connect_failures": self.failures,
            "fallbacks": self.fallbacks,
            "websocket_refused": self.refused,
            "last_error": self.last_error,
            "acquire_wait_ms": {"p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99),
                                "mean": round(statistics.fmean(waits) * 1000, 3)
                                if waits else None},
            "ready_ratio": round(min(1.0, ratio), 3),
            "ready_ratio_target": READY_RATIO_TARGET,
            "ready_ratio_ok": ratio >= READY_RATIO_TARGET,
            "server_health": self.server_health,
            "connections": [
                {"id": s.id, "state": s.state.value, "age_s": round(s.age(now), 1),
                 "leases": s.leases, "capacity": s.capacity, "served": s.served,
                 "healthy": s.healthy, "last_health": s.last_health,
                 "last_health_age_s": None if s.last_health_at is None
                 else round(now - s.last_health_at, 1)}
                for s in core.slots.values()
            ],
        }

    def __repr__(self) -> str:
        core = self._core
        return (f"<SilmaPool {self.endpoint.ws_url} ready={core.count(SlotState.READY)} "
                f"connecting={core.count(SlotState.CONNECTING)} in_use={core.in_use} "
                f"waiting={len(core.waiters)}>")
