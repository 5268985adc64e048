"""Runs our TTS server as a child process on loopback, for `make run` without an endpoint.

A separate process keeps CPU-bound synthesis off the bridge's event loop and GIL. It gets the
environment without the bridge's secrets (database URL, secret key, tokens, provider and SILMA
keys): it needs only its own settings, and a model it loads or a crash dump it writes should not
be able to reach them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Mapping

import aiohttp

from bridge.errors import TTSUnavailable

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
# The BRIDGE_* variables `python -m bridge tts-server` reads: its own section, logging, the file.
CHILD_PREFIXES = ("BRIDGE_TTS_SERVER_", "BRIDGE_LOG_")
CHILD_NAMES = frozenset({"BRIDGE_CONFIG"})


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


class LocalTTSServer:
    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        port = port or free_port(host)
        self.url = f"http://{host}:{port}"
        self._args = [sys.executable, "-m", "bridge", "tts-server", "--host", host,
                      "--port", str(port)]
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *self._args, env=child_environment(os.environ)
        )
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await self._wait_ready()
        except (TimeoutError, TTSUnavailable):
            await self.stop()
            raise TTSUnavailable(f"local TTS server did not become ready at {self.url}") from None

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
        raise TTSUnavailable(f"local TTS server exited with code {self._proc.returncode}")

    async def stop(self) -> None:
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
