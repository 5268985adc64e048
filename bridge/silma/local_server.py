"""Runs our TTS server as a child process on loopback, for `make run` without an endpoint, and
keeps it running: a child that dies (any exit, `kill -9`) is started again on the same port, so
the pools' connections to it fail over to the new child without the bridge restarting.

A separate process keeps CPU-bound synthesis off the bridge's event loop and GIL. It gets the
environment without the bridge's secrets (database URL, secret key, tokens, provider and SILMA
keys): it needs only its own settings, and a model it loads or a crash dump it writes should not
be able to reach them.

When to restart, and when to give up, is RestartCore's (restart_core.py); this shell starts the
process, waits for it to be ready or to exit, and sleeps the delays it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Mapping
from typing import Any

import aiohttp
import structlog

from bridge.errors import TTSUnavailable
from bridge.silma.restart_core import ChildState, RestartCore, RestartPolicy

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
# The BRIDGE_* variables `python -m bridge tts-server` reads: its own section, logging, the file.
CHILD_PREFIXES = ("BRIDGE_TTS_SERVER_", "BRIDGE_LOG_")
CHILD_NAMES = frozenset({"BRIDGE_CONFIG"})
DEFAULT_POLICY = RestartPolicy()
log = structlog.get_logger("bridge.local_tts")


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without the bridge's settings, but for those the TTS server reads. Variables
    not of the bridge (PATH, HOME, CUDA_*, HF_*) pass: the engines need them."""
    return {
        name: value for name, value in environ.items()
        if not name.startswith("BRIDGE_") or name in CHILD_NAMES or name.startswith(CHILD_PREFIXES)
    }


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on `port` now. SO_REUSEADDR as the child's listener sets
    it: the dead child's connections lingering in TIME_WAIT do not keep the port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def exit_reason(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exited with code {code}"


class LocalTTSServer:
    def __init__(self, port: int | None = None, host: str = "127.0.0.1",
                 policy: RestartPolicy = DEFAULT_POLICY) -> None:
        self._host = host
        self._core = RestartCore(policy)
        self._set_port(port or free_port(host))
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()  # replaced after each restart or give-up

    def _set_port(self, port: int) -> None:
        self.port = port
        self.url = f"http://{self._host}:{port}"
        self._args = [sys.executable, "-m", "bridge", "tts-server", "--host", self._host,
                      "--port", str(port)]

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None \
            else None

    @property
    def down(self) -> bool:
        """Given up on after repeated failures (the reason is in stats()["down_reason"])."""
        return self._core.state is ChildState.DOWN

    def stats(self) -> dict[str, Any]:
        return {"url": self.url, "pid": self.pid, **self._core.stats(self._now())}

    async def start(self) -> None:
        """Start the child and wait until it is ready (TTSUnavailable when it is not); from
        then on it is supervised: restarted whenever it dies."""
        await self._launch()
        self._core.ready(self._now())
        self._supervisor = asyncio.create_task(self._supervise(), name="local-tts-supervisor")

    async def wait_restarted(self, count: int, timeout_s: float) -> None:
        """Until `count` restarts have become ready (tests, the fault script). TimeoutError,
        or TTSUnavailable when the server was given up on first."""
        async with asyncio.timeout(timeout_s):
            while self._core.restarts < count:
                if self.down:
                    raise TTSUnavailable(f"local TTS server down: {self._core.reason}")
                await self._changed.wait()

    async def _launch(self) -> None:
        if not port_free(self._host, self.port):
            # Someone took the port while the child was down: a new one. Targets read `url` at
            # every call, so new calls go there and the sweep retires the old port's pool.
            old = self.url
            self._set_port(free_port(self._host))
            log.warning("local_tts_server_port_changed", old=old, new=self.url)
        self._proc = await asyncio.create_subprocess_exec(
            *self._args, env=child_environment(os.environ)
        )
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await self._wait_ready()
        except (TimeoutError, TTSUnavailable) as exc:
            await self._end_child()
            why = str(exc) or f"not ready in {READY_TIMEOUT_S:.0f} s"
            raise TTSUnavailable(f"local TTS server did not become ready at {self.url}: "
                                 f"{why}") from None

    async def _wait_ready(self) -> None:
        assert self._proc is not None
        delay = 0.05
        async with aiohttp.ClientSession() as http:
            while self._proc.returncode is None:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"{self.url}/health") as response:
                        if response.status == 200 and (await response.json()).get("ready"):
                            return
                # Polling a child we just started: it has no other way to tell us it is up.
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        raise TTSUnavailable(exit_reason(self._proc.returncode))

    async def _supervise(self) -> None:
        """The child's keeper (a task root): waits for its exit, then restarts it as the core
        says. Whatever ends this task unexpectedly is logged with its reason and the server
        reported down, never left unkept in silence."""
        try:
            while (proc := self._proc) is not None:
                code = await proc.wait()
                await self._restart(exit_reason(code), proc.pid)
        except Exception as exc:  # the task root
            self._core.give_up(f"supervisor failed: {type(exc).__name__}: {exc}"[:300])
            log.exception("local_tts_supervisor_failed", url=self.url)
            self._signal()

    async def _restart(self, reason: str, pid: int) -> None:
        log.error("local_tts_server_died", url=self.url, pid=pid, reason=reason)
        retry_at = self._core.failed(self._now(), reason)
        while retry_at is not None:
            await asyncio.sleep(max(0.0, retry_at - self._now()))  # the core's backoff
            self._core.starting()
            try:
                await self._launch()
            except TTSUnavailable as exc:
                log.warning("local_tts_server_start_failed", url=self.url, reason=str(exc))
                retry_at = self._core.failed(self._now(), str(exc))
                continue
            self._core.ready(self._now())
            log.info("local_tts_server_restarted", url=self.url, pid=self.pid,
                     restarts=self._core.restarts)
            self._signal()
            return
        self._proc = None  # ends the supervision: given up
        log.error("local_tts_server_down", url=self.url, reason=self._core.reason)
        self._signal()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def stop(self) -> None:
        self._core.stopped()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await self._end_child()

    async def _end_child(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
