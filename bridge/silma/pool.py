"""The warm pool: pre-connected WebSockets to one SILMA endpoint, shared by every call using it.

All decisions live in PoolCore (pool_core.py); this shell only performs them: it opens and closes
connections in background tasks, resolves waiting callers' futures, watches connections for loss,
and wakes up when a connection ages out or a backoff ends. Closing is shielded from cancellation
so a cancelled caller never leaks a socket.

The server may be a tenant's choice and untrusted, and this pool is shared by the whole
process: the maintainer task is supervised (any failure is logged with its reason, counted,
and the loop goes on after a backoff), the health body is size-capped and validated, health
checks follow no redirect and tell whether the API key is accepted, and replies the pool's
connections refused are counted (ReplyCounters) for stats() and the metrics.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import ssl
import statistics
import time
from collections.abc import Callable, Collection
from typing import Any

import aiohttp
import orjson
import structlog

from bridge.errors import TTSReplyTooLarge, TTSUnavailable
from bridge.settings import PoolSettings
from bridge.silma.capacity import Capacity, RecentMean, announced, health_interval_s
from bridge.silma.connection import ReplyCounters, TTSRefused, read_capped
from bridge.silma.connections import TTSConnection, open_connection
from bridge.silma.endpoint import V2, Endpoint
from bridge.silma.pool_core import Plan, PoolCore, SlotState
from bridge.silma.retry_core import RetryBudget, RetryPolicy
from bridge.silma.v2_connection import key_refused

READY_RATIO_TARGET = 0.8
# Our server's health body is under 2 KB; 64 KiB is plenty for any real one and bounds what a
# hostile /health can make us buffer and keep in server_health.
MAX_HEALTH_BYTES = 64 * 1024
# After the maintainer's loop fails: first retry soon (a one-off), then back off to 30 s so a
# failure that repeats cannot spin the event loop or flood the log.
MAINTAINER_BACKOFF_S = (0.1, 30.0)
KEY_REFUSED = "API key refused"
_KEY_REFUSED_STATUSES = (401, 403)
log = structlog.get_logger("bridge.pool")


# SILMA's cloud may accept the upgrade and then close for a refused key (4001, 4003, 1008): a
# v2 key check waits this long for that close before it calls the key accepted.
V2_KEY_VERDICT_S = 0.5


async def _closed_for_its_key(ws: aiohttp.ClientWebSocketResponse) -> bool:
    try:
        message = await ws.receive(timeout=V2_KEY_VERDICT_S)
    except TimeoutError:
        return False  # still open: the key is accepted
    return message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) \
        and key_refused(ws.close_code)


class _BadHealth(Exception):
    """The health reply is unusable; its message becomes the health status."""


class SilmaPool:
    """A ConnectionSource (see client.py) that keeps connections warm."""

    def __init__(self, session: aiohttp.ClientSession, endpoint: Endpoint, *, api_key: str,
                 limits: PoolSettings, connect_timeout_s: float,
                 ssl_context: ssl.SSLContext | bool = True) -> None:
        self.endpoint = endpoint
        self._session = session
        self._api_key = api_key
        self._connect_timeout_s = connect_timeout_s
        self._acquire_timeout_s = limits.acquire_timeout_s
        self._health_interval_s = limits.health_interval_s
        self._ssl = ssl_context
        self._core = PoolCore(limits)
        self._conns: dict[int, TTSConnection] = {}
        self._slot_of: dict[int, int] = {}  # id(conn) -> slot id
        self._waiters: dict[int, asyncio.Future[TTSConnection]] = {}
        self._waiter_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()  # replaced after each change: waiters see every one
        self._maintainer: asyncio.Task[None] | None = None
        self._acquire_waits: collections.deque[float] = collections.deque(maxlen=1000)
        self.counters = ReplyCounters()  # shared by this pool's connections and its clients
        policy = RetryPolicy()
        self.retry_budget = RetryBudget(policy.budget_tokens, policy.budget_ratio)
        self.maintainer_failures = 0
        self.last_maintainer_error: str | None = None
        self.health_failures = 0
        self.failures = 0
        self.fallbacks = 0
        self.refused = False  # the server answered but refused WebSocket: use HTTP
        self.last_error: str | None = None
        self.server_health: dict[str, Any] = {"status": "unchecked"}
        self._first_audio = RecentMean()
        self.on_health: Callable[[bool], None] | None = None  # a fleet's hook: ok or not
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
    async def acquire(self, avoid: Collection[str] = ()) -> TTSConnection:
        # `avoid` is ignored: this pool has one server (a Fleet spreads over several).
        if self.refused:
            raise TTSRefused("TTS server refuses WebSocket; using HTTP")
        started = self._now()
        waiter = next(self._waiter_ids)
        future: asyncio.Future[TTSConnection] = asyncio.get_running_loop().create_future()
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

    def release(self, conn: TTSConnection, failure: str | None = None) -> None:
        slot = self._slot_of.get(id(conn))
        if slot is not None:
            self._run(self._core.released(slot, self._now(), reusable=conn.usable))

    def note_fallback(self) -> None:
        self.fallbacks += 1

    @property
    def has_connections(self) -> bool:
        """Some connection is ready or in use: a server that is down has none."""
        return self._core.count(SlotState.READY) > 0 or self._core.in_use > 0

    @property
    def outstanding(self) -> int:
        """Requests on this server now: leased connections and callers waiting for one."""
        return self._core.in_use + len(self._core.waiters)

    def note_first_audio(self, seconds: float) -> None:
        self._first_audio.add(self._now(), seconds)

    def capacity(self) -> Capacity:
        """What admission knows of this server: its announced slots and urgent piece time
        (last health check), and the first audio its callers waited for lately."""
        concurrency, piece_s = announced(self.server_health.get("server") or {})
        return Capacity(concurrency=concurrency, urgent_piece_s=piece_s,
                        first_audio_s=self._first_audio.mean(self._now()))

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

    @property
    def maintainer_running(self) -> bool:
        return self._maintainer is not None and not self._maintainer.done()

    async def _open_slot(self, slot: int) -> None:
        try:
            conn = await open_connection(
                self._session, self.endpoint, api_key=self._api_key,
                timeout_s=self._connect_timeout_s, heartbeat_s=self._health_interval_s,
                ssl=self._ssl, counters=self.counters)
        except Exception as exc:  # a task root: whatever failed, the slot must be given back
            if not isinstance(exc, TTSUnavailable):
                log.exception("tts_connect_crashed", endpoint=self.endpoint.ws_url)
                exc = TTSUnavailable(f"cannot connect to TTS server: {type(exc).__name__}")
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
        if not conn.usable:  # its reader ended before the hook was set: replace it now
            self._lost(slot)
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
        """Supervises the maintenance loop: it never dies silently. Any failure is logged with
        its reason and counted, and the loop starts again after a growing backoff."""
        backoff = MAINTAINER_BACKOFF_S[0]
        while True:
            try:
                await self._maintain_loop()
            except Exception as exc:  # the task root
                self.maintainer_failures += 1
                self.last_maintainer_error = f"{type(exc).__name__}: {exc}"[:300]
                log.exception("pool_maintainer_failed", endpoint=self.endpoint.ws_url,
                              failures=self.maintainer_failures, retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(MAINTAINER_BACKOFF_S[1], backoff * 2)

    async def _maintain_loop(self) -> None:
        """Wake at the next ageing/backoff deadline or health check; re-plan; check health."""
        next_health = self._now()
        while True:
            now = self._now()
            if now >= next_health:
                await self.check_health()
                next_health = self._now() + health_interval_s(
                    self.server_health.get("server") or {}, self._health_interval_s)
            deadline = min(d for d in (self._core.next_deadline(now), next_health) if d)
            self._wake.clear()
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that
            # races the event, and close() would then wait on this task forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, deadline - self._now())):
                    await self._wake.wait()
            self._run(self._core.plan(self._now()))

    async def check_health(self) -> dict[str, Any]:
        """The server's health endpoint, whether it accepts the API key (a WebSocket upgrade
        carrying it: 401/403 is "API key refused"), and whether each pooled socket is open.
        Never follows a redirect; the key travels only in a header. SILMA's v2 API has no
        health endpoint: there the upgrade alone says whether the server is up."""
        started = self._now()
        body: dict[str, Any] = {}
        try:
            if self.endpoint.api == V2:
                status = "ok"  # unless the upgrade below says otherwise
            else:
                status, body = await self._health_body()
        except _BadHealth as exc:
            status = str(exc)
        except TTSReplyTooLarge as exc:
            status = f"bad health reply: {exc}"
        except TimeoutError:  # before OSError, of which it is a subclass
            status = "unreachable: TimeoutError"
        except (aiohttp.ClientError, OSError) as exc:
            status = f"unreachable: {type(exc).__name__}"
        key = "unchecked"
        if not status.startswith(("unreachable", "redirect")) and status != KEY_REFUSED:
            key = await self._key_check()
            if key == "refused":
                status = KEY_REFUSED
            elif self.endpoint.api == V2 and key != "accepted":
                # v2 has no health route: the upgrade that carries the key is the check.
                status = f"unreachable: {key.removeprefix('unchecked: ')}"
        elif status == KEY_REFUSED:
            key = "refused"
        if status != "ok":
            self.health_failures += 1
        now = self._now()
        self.server_health = {"status": status, "api_key": key,
                              "latency_ms": round((now - started) * 1000, 1),
                              "checked_at": time.time(), "server": body}
        if self.on_health is not None:
            self.on_health(status == "ok")
        for slot, conn in list(self._conns.items()):
            self._run(self._core.health(slot, now, conn.usable,
                                        "open" if conn.usable else "closed"))
        return self.server_health

    async def _health_body(self) -> tuple[str, dict[str, Any]]:
        async with self._session.get(
            self.endpoint.health_url, ssl=self._ssl,
            headers={**self.endpoint.auth_headers(self._api_key), "Accept-Encoding": "identity"},
            timeout=aiohttp.ClientTimeout(total=self._connect_timeout_s),
            allow_redirects=False,  # a 302 to an internal service must go nowhere
        ) as response:
            if 300 <= response.status < 400:
                raise _BadHealth(f"redirect refused (HTTP {response.status})")
            if response.status in _KEY_REFUSED_STATUSES:
                raise _BadHealth(KEY_REFUSED)
            if response.status != 200:
                return f"HTTP {response.status}", {}
            raw = await read_capped(response, MAX_HEALTH_BYTES, "the health reply")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _BadHealth("bad health reply: not JSON") from None
        if not isinstance(body, dict):
            raise _BadHealth(f"bad health reply: a JSON {type(body).__name__}, not an object")
        ready = body.get("ready", True)
        if not isinstance(ready, bool):
            raise _BadHealth("bad health reply: ready is not true or false")
        return ("ok" if ready else "not ready"), body

    async def _key_check(self) -> str:
        """accepted | refused | unchecked (with why): a WebSocket upgrade with the key, closed
        at once (v2: once V2_KEY_VERDICT_S passed with no close for the key). A server with no
        WebSocket route cannot say; HTTP requests then show it."""
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                ws = await self._session.ws_connect(
                    self.endpoint.ws_url, headers=self.endpoint.auth_headers(self._api_key),
                    compress=0, ssl=self._ssl, max_msg_size=MAX_HEALTH_BYTES,
                    timeout=aiohttp.ClientWSTimeout(ws_close=1.0))
                refused = self.endpoint.api == V2 and await _closed_for_its_key(ws)
                await ws.close()
            if refused:
                return "refused"
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in _KEY_REFUSED_STATUSES:
                return "refused"
            return f"unchecked: WebSocket upgrade answered HTTP {exc.status}"
        except TimeoutError:
            return "unchecked: WebSocket upgrade timed out"
        except (aiohttp.ClientError, OSError) as exc:
            return f"unchecked: {type(exc).__name__}"
        return "accepted"

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
            "malformed_replies": self.counters.malformed,
            "oversize_replies": self.counters.oversize,
            "unrouted_replies": self.counters.unrouted,
            "reader_failures": self.counters.reader_failures,
            "last_refused_reply": self.counters.last_reason,
            "maintainer_running": self.maintainer_running,
            "maintainer_failures": self.maintainer_failures,
            "last_maintainer_error": self.last_maintainer_error,
            "health_failures": self.health_failures,
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
            "capacity": dataclasses.asdict(self.capacity()),
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
