"""The drain's shell: what the bridge does between SIGTERM and its exit (drain_core.py decides
when each phase ends; this module waits and acts).

`Drainer.signalled` is the signal handler: the first signal turns the bridge not-ready and makes
its webhooks answer busy at once (both read the context's Drain core). `Drainer.run` serves
until then and drains after it: it waits for the live calls to end, hangs up those left at the
deadline with the goodbye said over whatever was playing, closes every stream still open, each
within its own bound and all at once, so one peer that stopped reading holds nobody else, and
returns when every call has filed its trace.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiohttp import WSCloseCode, web

from bridge.call.session import CallSession
from bridge.supervisor import Supervisor
from bridge.web.context import BridgeContext, context
from bridge.web.drain_core import CloseStreams, EndCalls, Exit
from bridge.web.media_socket import MediaSocket

log = structlog.get_logger("bridge.drain")
# New streams (an answered call connecting) and lapsing reservations come with no event to wait
# on: the drain looks again this often.
RECHECK_S = 0.5


async def readiness(request: web.Request) -> web.Response:
    """For load balancers and Kubernetes' readiness probe: 503 from the first SIGTERM on, so
    no new call is sent here (/health stays the liveness probe: a draining bridge is alive)."""
    ctx = context(request)
    draining = ctx.drain.draining
    return web.json_response({"status": "draining" if draining else "ready",
                              "live_calls": len(ctx.registry.live)},
                             status=503 if draining else 200)


async def close_streams(ctx: BridgeContext, timeout_s: float) -> int:
    """Close every open media stream at once, each within `timeout_s`: a peer that does not
    answer the close (one that stopped reading) is cut off then. Returns how many were open."""
    sockets = [socket for socket in ctx.sockets if not socket.closed]
    if sockets:
        log.info("closing_streams", streams=len(sockets),
                 backed_up=sum(socket.backed_up for socket in sockets), timeout_s=timeout_s)
    results = await asyncio.gather(
        *(socket.close(WSCloseCode.GOING_AWAY, "server shutdown", timeout_s=timeout_s)
          for socket in sockets), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            log.warning("stream_close_failed", error=f"{type(result).__name__}: {result}")
    return len(sockets)


class Drainer:
    def __init__(self, ctx: BridgeContext) -> None:
        self._ctx = ctx
        self._core = ctx.drain
        self._loop = asyncio.get_running_loop()
        self._signal = asyncio.Event()
        self._hangups = Supervisor(self._hangup_failed)
        self._hung_up: set[CallSession] = set()  # the calls this drain has ended
        self._watching: dict[MediaSocket, asyncio.Task[None]] = {}  # open streams' ends
        self._live_at_signal = 0

    def signalled(self) -> None:
        """SIGTERM or SIGINT (a loop signal handler: synchronous)."""
        first = not self._core.draining
        self._core.signalled(self._loop.time())
        if first:
            if self._ctx.services.fleet is not None:  # the other bridges see it draining
                self._ctx.services.fleet.set_draining()
            self._live_at_signal = len(self._ctx.registry.live)
            log.info("drain_started", live_calls=self._live_at_signal,
                        deadline_s=self._core.deadline_s, longest_s=self._core.longest_s)
        else:
            log.info("drain_hurried", phase=self._core.phase.value,
                        live_calls=len(self._ctx.registry.live))
        self._signal.set()

    async def run(self) -> None:
        """Serve until the first signal, then drain; returns when the drain is over."""
        await self._signal.wait()
        started = self._loop.time()
        aborted = 0
        try:
            while True:
                self._signal.clear()  # a signal from now on ends the wait below at once
                step = self._core.step(self._loop.time(), self._held())
                if isinstance(step, Exit):
                    break
                if isinstance(step, CloseStreams):
                    aborted = await self._close()
                    continue
                if isinstance(step, EndCalls):
                    self._end_calls()
                await self._wait(step.until)
        finally:
            await self._hangups.aclose()
            for task in self._watching.values():
                task.cancel()
        log.info("drain_finished", seconds=round(self._loop.time() - started, 3),
                    live_at_signal=self._live_at_signal, hung_up=len(self._hung_up),
                    closed_at_end=aborted)

    def _held(self) -> int:
        """Streams open, and calls answered whose stream is still to come."""
        open_streams = sum(1 for socket in self._ctx.sockets if not socket.closed)
        return open_streams + self._ctx.admission.pending(self._loop.time())

    def _end_calls(self) -> None:
        goodbye = self._ctx.settings.call.drain_goodbye or None
        for session in list(self._ctx.registry.live.values()):
            if session not in self._hung_up:
                self._hung_up.add(session)
                self._hangups.spawn(f"drain-{session.call_id}", session.hangup(
                    goodbye, reason="drained", interrupt=True))

    async def _wait(self, until: float) -> None:
        """Until `until`, a signal or a stream's end, and at most RECHECK_S."""
        for socket in self._ctx.sockets:
            if not socket.closed and socket not in self._watching:
                self._watching[socket] = self._loop.create_task(
                    socket.wait_closed(), name="drain-watch")
        signal = self._loop.create_task(self._signal.wait(), name="drain-signal")
        timeout = min(max(0.0, until - self._loop.time()), RECHECK_S)
        try:
            await asyncio.wait({signal, *self._watching.values()}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            signal.cancel()
        for socket, task in list(self._watching.items()):
            if task.done():
                del self._watching[socket]

    async def _close(self) -> int:
        """Close what is left, then give the calls close_s to file their traces."""
        close_s = self._core.close_s
        closed = await close_streams(self._ctx, close_s)
        sessions = list(self._ctx.registry.live.values())
        with contextlib.suppress(TimeoutError):  # the stragglers are logged just below
            async with asyncio.timeout(close_s):
                await asyncio.gather(*(session.ended.wait() for session in sessions))
        for session in sessions:
            if not session.ended.is_set():
                log.warning("drain_call_not_finished", call_id=session.call_id)
        return closed

    def _hangup_failed(self, name: str, exc: BaseException) -> None:
        log.warning("drain_hangup_failed", task=name, error=f"{type(exc).__name__}: {exc}",
                    exc_info=exc)
