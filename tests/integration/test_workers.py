"""`python -m bridge serve --workers 2` as a real process tree on a free loopback port, with the
real Redis of this machine, our TTS server (Piper) and emulated Twilio calls: both workers
serve on the one port and are two fleet members; a call whose webhook one worker answered and
whose stream the other serves is heard and controlled through the first; SIGTERM ends every
worker with exit 0; a worker killed with -9 is replaced while the other serves on; a supervisor
killed with -9 leaves no worker behind; one local TTS server serves all workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import aiohttp
import numpy as np
import pytest
import redis.asyncio as aioredis

from bridge.audio.mulaw import ulaw2lin
from bridge.emulator.twilio_wire import TwilioCallEmulator, parse_twiml
from bridge.fleet import core as fleet_core
from bridge.fleet.forward import FORWARDED_BY, ROUTED_TO
from bridge.tts_server.app import RunningServer
from bridge.workers import WORKER_HEADER
from tests.servers import DEFAULT_TOKEN
from tests.speech import assert_is_speech

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/11"  # a database of its own, emptied around each test
AUTH = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
START_S = 60.0
WAIT_S = 20.0
ATTEMPTS = 40  # calls placed until a stream lands on another worker than its webhook: 2^-40
DRAIN_DEADLINE_S = 1.0
MARK_TIMEOUT_S = 1.0
# A worker's drain at the longest with these settings (deadline, goodbye mark, three closes of
# 2 s) and its listener's shutdown (5 s), plus room for this 2-core machine.
EXIT_BOUND_S = DRAIN_DEADLINE_S + MARK_TIMEOUT_S + 6 + 5 + 8


@pytest.fixture
async def redis_db() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(REDIS_URL)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


def free_port() -> int:
    with socket.socket() as sock:  # freed before the workers bind it: a tiny race on loopback
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports (ops port + i for each worker)."""
    while True:
        first = free_port()
        with contextlib.ExitStack() as held:
            try:
                for port in range(first, first + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return first


class Supervisor:
    """`python -m bridge serve --workers N`; its output (JSON log lines of the supervisor and
    its workers, which inherit its stderr) read as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc = proc
        self.url = url
        self.lines: list[str] = []
        self._line = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, tmp_path: Path, *args: str, wait: bool = True,
                    env: dict[str, str] | None = None) -> Supervisor:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        base = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "serve", *args, cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**base, "BRIDGE_HOST": "127.0.0.1", "BRIDGE_PORT": str(port),
                 "BRIDGE_PUBLIC_URL": url, "BRIDGE_REDIS_URL": REDIS_URL,
                 # No BRIDGE_SECRET_KEY: the SQLite file's key, shared by the supervisor.
                 "BRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}",
                 "BRIDGE_ALLOW_UNSIGNED_WEBHOOKS": "true",
                 "BRIDGE_DEFAULT_USER_TOKEN": DEFAULT_TOKEN, "BRIDGE_LOG_FORMAT": "json",
                 "BRIDGE_FLEET_INSTANCE_ID": "wt", "BRIDGE_FLEET_HEARTBEAT_S": "0.2",
                 "BRIDGE_FLEET_TTL_S": "1.0",
                 "BRIDGE_CALL_DRAIN_DEADLINE_S": str(DRAIN_DEADLINE_S),
                 "BRIDGE_CALL_MARK_TIMEOUT_S": str(MARK_TIMEOUT_S),
                 "PYTHONUNBUFFERED": "1", **(env or {})})
        supervisor = cls(proc, url)
        if wait:
            try:
                await supervisor.wait_for(lambda line: line.startswith("bridge listening on"),
                                          START_S)
            except TimeoutError:
                supervisor.kill()
                raise AssertionError("the workers did not start:\n"
                                     + "\n".join(supervisor.lines[-30:])) from None
        return supervisor

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            async with self._line:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self._line.notify_all()

    async def wait_for(self, match: Callable[[str], bool], timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s), self._line:
            await self._line.wait_for(lambda: any(match(line) for line in self.lines))

    async def wait_event(self, name: str, timeout_s: float = WAIT_S, **fields: Any) -> None:
        await self.wait_for(lambda line: _matches(line, name, fields), timeout_s)

    def events(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines if _matches(line, name, fields)]

    def worker_pids(self) -> dict[str, int]:
        return {e["instance"]: e["pid"] for e in self.events("worker_started")}

    async def exited(self, timeout_s: float) -> int:
        try:
            async with asyncio.timeout(timeout_s):
                code = await self.proc.wait()
                await self._reader
        except TimeoutError:
            raise AssertionError(f"still running after {timeout_s} s:\n"
                                 + "\n".join(self.lines[-40:])) from None
        return code

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


def _matches(line: str, name: str, fields: dict[str, Any]) -> bool:
    if not line.startswith("{") or f'"event": "{name}"' not in line:
        return False
    event = json.loads(line)
    return all(event.get(key) == value for key, value in fields.items())


@contextlib.asynccontextmanager
async def supervisor(tmp_path: Path, *args: str, **env: str) -> AsyncIterator[Supervisor]:
    running = await Supervisor.start(tmp_path, "--workers", "2", *args, env=env)
    children = [pid for pid, _ in _children(running.proc.pid)]  # workers, local TTS server
    try:
        yield running
    finally:
        running.kill()
        with contextlib.suppress(AssertionError):
            await running.exited(WAIT_S)
        for pid in {*children, *running.worker_pids().values()}:  # never leave one behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def members(redis: aioredis.Redis) -> dict[str, fleet_core.Instance]:
    """The fleet's live members, by id (what Membership.instances reads)."""
    found = {}
    ids = await cast("Awaitable[set[bytes]]", redis.smembers(fleet_core.INSTANCES))
    for raw_id in ids:
        record = fleet_core.decode_instance(
            await redis.get(fleet_core.instance_key(raw_id.decode())))
        if record is not None:
            found[record.id] = record
    return found


async def holder(http: aiohttp.ClientSession, workers: dict[str, fleet_core.Instance],
                 call_id: str) -> str:
    """Which worker holds `call_id`, asked of each on its own port, as a forwarded request
    (answered from what that worker holds, never forwarded again)."""
    held = []
    for instance in workers.values():
        async with http.get(f"{instance.url}/calls/{call_id}/trace",
                            headers={**AUTH, FORWARDED_BY: "test"}) as r:
            if r.status == 200 and (await r.json())["live"]:
                held.append(instance.id)
    assert len(held) == 1, held
    return held[0]


def new_connection_each_time() -> aiohttp.ClientSession:
    # A fresh TCP connection per request: the kernel picks a worker for each.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


async def test_a_webhook_on_one_worker_and_its_stream_on_the_other_make_one_call(
        tts: RunningServer, redis_db: aioredis.Redis, tmp_path: Path) -> None:
    ops = free_ports(2)
    async with supervisor(tmp_path, BRIDGE_SILMA_ENDPOINT=tts.url,
                          BRIDGE_OPS_PORT=str(ops)) as bridges, \
            new_connection_each_time() as http:
        workers = await members(redis_db)
        assert sorted(workers) == ["wt-w0", "wt-w1"]  # two fleet members
        assert len({w.url for w in workers.values()}) == 2  # each reached on its own port
        for i in (0, 1):  # each worker's own metrics on ops port + i
            async with http.get(f"http://127.0.0.1:{ops + i}/metrics") as r:
                assert r.status == 200 and r.headers[WORKER_HEADER] == str(i)
        for attempt in range(ATTEMPTS):
            call_sid = f"CAworkers{attempt}"
            async with http.post(f"{bridges.url}/twilio/voice",
                                 data={"CallSid": call_sid}) as r:
                assert r.status == 200
                webhook_worker = f"wt-w{r.headers[WORKER_HEADER]}"
                stream_url, params = parse_twiml(await r.text())
            call = TwilioCallEmulator(http, stream_url, call_sid=call_sid, parameters=params)
            await call.connect(greetings=1)
            async with asyncio.timeout(WAIT_S):
                await call.wait_first_media()  # live, on whichever worker took the stream
            stream_worker = await holder(http, workers, call_sid)
            if stream_worker == webhook_worker:
                await call.stop()
                continue
            break
        else:
            raise AssertionError(f"no stream landed off its webhook's worker in {ATTEMPTS}")
        # The call answered by one worker and streamed by the other is heard...
        async with asyncio.timeout(WAIT_S):
            await call.wait_for_marks(1)
        heard = call.marks_settled
        assert_is_speech(ulaw2lin(bytes(call.recording)).astype(np.float32) / 32768, 8000)
        # ...and controlled through the worker that answered its webhook (routed by the fleet).
        webhook_url = workers[webhook_worker].url
        async with http.post(f"{webhook_url}/calls/{call_sid}/say", headers=AUTH,
                             json={"text": "Routed across workers."}) as said:
            assert said.status == 202, await said.text()
            assert said.headers[ROUTED_TO] == workers[stream_worker].url
        async with asyncio.timeout(WAIT_S):
            await call.wait_for_marks(heard + 1)
        await call.stop()
        assert call.report().protocol_violations == []
        bridges.proc.send_signal(signal.SIGTERM)
        assert await bridges.exited(EXIT_BOUND_S) == 0
    exits = {e["instance"]: e["status"] for e in bridges.events("worker_exited")}
    assert exits == {"wt-w0": 0, "wt-w1": 0}
    for pid in bridges.worker_pids().values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped by the supervisor: gone
    assert await members(redis_db) == {}  # both left the registry


async def test_a_worker_killed_is_started_again_and_the_other_serves_on(
        tts: RunningServer, redis_db: aioredis.Redis, tmp_path: Path) -> None:
    async with supervisor(tmp_path, BRIDGE_SILMA_ENDPOINT=tts.url) as bridges, \
            new_connection_each_time() as http:
        os.kill(bridges.worker_pids()["wt-w1"], signal.SIGKILL)
        await bridges.wait_event("worker_died", instance="wt-w1", reason="killed by signal 9")
        # Meanwhile the port is served: every request is answered, by the worker left.
        for _ in range(10):
            async with http.get(f"{bridges.url}/health") as r:
                assert r.status == 200 and r.headers[WORKER_HEADER] == "0"
        await bridges.wait_event("worker_restarted", instance="wt-w1r1")
        assert {"wt-w0", "wt-w1r1"} <= set(await members(redis_db))
        seen = set()
        for _ in range(ATTEMPTS):
            async with http.get(f"{bridges.url}/health") as r:
                seen.add(r.headers[WORKER_HEADER])
            if seen == {"0", "1"}:
                break
        assert seen == {"0", "1"}  # the new worker 1 takes connections on the port again
        bridges.proc.send_signal(signal.SIGTERM)
        assert await bridges.exited(EXIT_BOUND_S) == 0


async def test_a_supervisor_killed_leaves_no_worker_behind(
        tts: RunningServer, redis_db: aioredis.Redis, tmp_path: Path) -> None:
    async with supervisor(tmp_path, BRIDGE_SILMA_ENDPOINT=tts.url) as bridges:
        pidfds = [os.pidfd_open(pid) for pid in bridges.worker_pids().values()]
        bridges.proc.kill()
        await bridges.exited(WAIT_S)
        try:
            # A pidfd turns readable when its process exits: each worker drains and leaves.
            pending = set(pidfds)
            while pending:
                done, _, _ = await asyncio.to_thread(select.select, list(pending), [], [],
                                                     EXIT_BOUND_S)
                assert done, "a worker outlived its supervisor"
                pending -= set(done)
        finally:
            for fd in pidfds:
                os.close(fd)
        assert await members(redis_db) == {}


def _children(pid: int) -> list[tuple[int, str]]:
    """The processes whose parent is `pid`, with their command lines (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append((int(entry.name), cmdline))
    return found


async def test_one_local_tts_server_serves_every_worker(
        redis_db: aioredis.Redis, tmp_path: Path) -> None:
    ops = free_ports(2)
    # No endpoint: local mode, as `make run`. The supervisor runs the one local server.
    async with supervisor(tmp_path, BRIDGE_OPS_PORT=str(ops)) as bridges, \
            new_connection_each_time() as http:
        children = _children(bridges.proc.pid)
        servers = [pid for pid, cmd in children if " tts-server " in f"{cmd} "]
        assert len(servers) == 1, children
        assert len(children) == 3  # the TTS server and the two workers
        for pid, _ in children:
            grandchildren = [cmd for _, cmd in _children(pid) if "tts-server" in cmd]
            assert grandchildren == []  # no worker started one of its own
        endpoints = set()
        for i in (0, 1):
            async with http.get(f"http://127.0.0.1:{ops + i}/api/pool") as r:
                endpoints |= {pool["endpoint"] for pool in (await r.json())["pools"]}
        assert len(endpoints) == 1  # both workers' pools on the one server
        bridges.proc.send_signal(signal.SIGTERM)
        assert await bridges.exited(EXIT_BOUND_S) == 0
    for pid in servers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # stopped with the supervisor


@pytest.mark.parametrize(("env", "needle"), [
    ({"BRIDGE_REDIS_URL": ""}, "2 workers need BRIDGE_REDIS_URL"),
    ({"BRIDGE_DATABASE_URL": "sqlite+aiosqlite://"}, "in-memory SQLite"),
])
async def test_settings_n_workers_cannot_share_stop_the_start(
        redis_db: aioredis.Redis, tmp_path: Path, env: dict[str, str], needle: str) -> None:
    refused = await Supervisor.start(tmp_path, "--workers", "2", wait=False, env=env)
    assert await refused.exited(WAIT_S) == 2
    assert any(needle in line for line in refused.lines), refused.lines
    assert refused.events("worker_started") == []  # refused before any worker started


async def test_a_port_taken_by_another_process_is_refused_before_sharing_it(
        redis_db: aioredis.Redis, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # even one that shares
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = await Supervisor.start(tmp_path, "--workers", "2", wait=False,
                                         env={"BRIDGE_PORT": str(port)})
        assert await refused.exited(WAIT_S) == 2
    assert any("cannot listen on" in line for line in refused.lines), refused.lines


async def test_a_fleet_task_cancelled_as_its_read_times_out_ends() -> None:
    """Membership.stop() cancels the settings listener; when that lands as the listener's
    Redis read times out, asyncio.timeout (3.11) and redis-py turn the cancel into
    redis.TimeoutError. Retried as a failure, the task never ended and neither did stop():
    a worker signalled then drained and hung (found by this module's tests)."""
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from bridge.fleet.membership import FleetTiming, Membership

    member = Membership.connect(REDIS_URL, fleet_core.Instance("m", "http://127.0.0.1:9"),
                                FleetTiming())

    async def cancel_turned_into_an_error() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RedisTimeoutError("Timeout reading from 127.0.0.1:6379") from None

    task = asyncio.create_task(member._supervised("settings", cancel_turned_into_an_error))
    await asyncio.sleep(0)  # let it start
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5.0)
    if not done:  # retried: a second cancel reaches it in its backoff's sleep
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await member.abandon()
    assert done, "the cancelled task retried instead of ending"
