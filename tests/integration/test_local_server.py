"""The local TTS server (Piper, a real child process) is restarted after `kill -9`, on the same
port, and the pool pointing at it serves again without being rebuilt."""

import os
import signal

from bridge.silma.local_server import LocalTTSServer
from bridge.silma.restart_core import RestartPolicy
from tests.integration.test_pool import client_for, http, make_pool, speak, started

__all__ = ["http"]  # the fixture, used by name


async def test_killed_child_is_restarted_and_requests_succeed_again(http):
    server = LocalTTSServer(policy=RestartPolicy(base_s=0.05, max_s=0.5))
    await server.start()
    try:
        async with started(make_pool(http, server.url, warm=1)) as pool:
            await pool.wait_ready(1, timeout_s=10)
            assert (await speak(client_for(pool, http)))[0] > 0
            first_pid, url = server.pid, server.url
            assert first_pid is not None
            os.kill(first_pid, signal.SIGKILL)
            await server.wait_restarted(1, timeout_s=60)
            assert server.url == url and server.pid not in (None, first_pid)
            stats = server.stats()
            assert stats["deaths"] == 1 and stats["last_failure"] == "killed by signal 9"
            await pool.wait_ready(1, timeout_s=10)
            audio, steps = await speak(client_for(pool, http))
            assert audio > 0 and "fallback" not in steps
    finally:
        await server.stop()
