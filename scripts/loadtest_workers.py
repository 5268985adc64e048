#!/usr/bin/env python3
"""`serve --workers N` under load: the same calls against 1 worker and against N, side by side;
calls held and CPU per worker, and what that makes per machine.

    flock /tmp/bench.lock .venv/bin/python scripts/loadtest_workers.py \
        [--calls 200] [--duration 20] [--workers 1,2] [--redis redis://127.0.0.1:6379/14]

Started here, for each worker count: the TTS stand-in (the sim engine's speech and GPU latency
model, served from memory: loadtest_lib/tts_standin.py) and `python -m bridge serve --workers N`
on one port, with one Redis (its database emptied first; the single worker is a fleet of one
too, so both runs pay the same registry writes) and one SQLite store. The callers are the load
test's own (loadtest_lib/caller.py) in this process: each rings the shared port (the kernel
picks the worker), hears its greeting, then asks for a 3-sentence reply through the shared port
(so with N workers most control requests are forwarded to the worker holding the call) and
waits until it has played, again until the end. Needs `pip install -e '.[bench]'` (psutil).

CPU is measured per worker process over the steady window (after the ramp-up). "Calls per
machine" projects each worker to one full core (its calls / its share of a core) and sums over
min(N, cores) workers: the capacity if the bridge had the machine to itself. On this 2-core
machine the callers and the TTS share the cores with the bridge, so the measured numbers are
the bridge's cost per call, not the machine's capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import cast

import aiohttp
import numpy as np
import psutil
import redis.asyncio as aioredis
from loadtest_lib import servers
from loadtest_lib.caller import Caller, open_call
from loadtest_lib.media_frames import caller_payloads
from loadtest_lib.meters import CpuMeter
from loadtest_lib.shared_clock import SharedClock

from bridge.audio.mulaw import lin2ulaw
from bridge.emulator.wire import CallFailed
from bridge.fleet import core as fleet_core

REPLY = ("Your order is on its way. It should arrive on Thursday. "
         "Is there anything else I can help you with?")
GREETING = "Hello, this is the workers load test."
SETUP_TIMEOUT_S = 30.0
MARK_TIMEOUT_S = 30.0


@dataclasses.dataclass
class Run:
    workers: int
    calls: int
    per_worker_calls: list[int]
    per_worker_cpu: list[float]  # % of one core, steady window
    supervisor_cpu: float | None
    machine_cpu: float | None
    replies: int
    ttfa_ms: list[float]
    underruns: int
    errors: collections.Counter[str]

    @property
    def bridge_cpu(self) -> float:
        return sum(self.per_worker_cpu) + (self.supervisor_cpu or 0.0)

    def per_machine(self, cores: int) -> float | None:
        """Calls the machine would hold with every worker on a full core (linear in CPU)."""
        per_core = [calls / (cpu / 100) for calls, cpu in zip(self.per_worker_calls,
                                                              self.per_worker_cpu, strict=True)
                    if cpu > 0]
        if not per_core:
            return None
        return statistics.fmean(per_core) * min(self.workers, cores)


def noise_audio(seconds: float) -> bytes:
    rng = np.random.default_rng(7)
    return lin2ulaw(rng.integers(-60, 61, int(seconds * 8000), dtype=np.int16))


async def one_call(http: aiohttp.ClientSession, base: str, token: str, payloads: tuple[bytes, ...],
                   clock: SharedClock, start_at: float, end_at: float,
                   tally: collections.Counter[str], ttfa: list[float],
                   callers: list[Caller]) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, start_at - loop.time()))
    try:
        async with asyncio.timeout(SETUP_TIMEOUT_S):
            call = await open_call(http, base, "twilio", payloads, clock)
    except (TimeoutError, CallFailed, aiohttp.ClientError, OSError) as exc:
        tally[f"setup: {type(exc).__name__}"] += 1
        return
    callers.append(call)
    try:
        async with asyncio.timeout_at(end_at):
            async with asyncio.timeout(MARK_TIMEOUT_S):
                await call.wait_for_marks(1)
            while True:
                target = call.marks_settled + 1
                asked = call.expect_utterance("reply")
                async with http.post(f"{base}/calls/{call.call_sid}/say", json={"text": REPLY},
                                     headers={"Authorization": f"Bearer {token}"}) as answer:
                    if answer.status != 202:
                        tally[f"say HTTP {answer.status}"] += 1
                        await asyncio.sleep(end_at - loop.time())  # keep the call, stop asking
                tally["says"] += 1
                async with asyncio.timeout(MARK_TIMEOUT_S):
                    await call.wait_for_marks(target)
                if asked.first_audio_s is not None:
                    ttfa.append(asked.first_audio_s * 1000)
    except TimeoutError:
        pass  # the run is over (or a reply did not play: counted by the report's marks)
    except CallFailed as exc:
        tally[f"call: {exc}"[:60]] += 1
    finally:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await call.stop()


def worker_pids(supervisor: int, workers: int) -> list[int]:
    """The processes serving the port: the supervisor's workers by index, or itself."""
    if workers == 1:
        return [supervisor]
    found: dict[int, int] = {}
    for child in psutil.Process(supervisor).children():
        cmd = child.cmdline()
        if "--worker-index" in cmd:
            found[int(cmd[cmd.index("--worker-index") + 1])] = child.pid
    return [found[i] for i in sorted(found)]


async def wait_members(client: aioredis.Redis, count: int, timeout_s: float) -> list[str]:
    """The fleet's member URLs once `count` members are registered (each worker's own port)."""
    async with asyncio.timeout(timeout_s):
        while True:
            ids = await cast("Awaitable[set[bytes]]", client.smembers(fleet_core.INSTANCES))
            records = [fleet_core.decode_instance(await client.get(
                fleet_core.instance_key(i.decode()))) for i in ids]
            urls = sorted(r.url for r in records if r is not None)
            if len(urls) >= count:
                return urls
            await asyncio.sleep(0.2)  # polling a starting process: nothing to wait on


async def live_calls(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(f"{url}/health") as answer:
        return int((await answer.json())["live_calls"])


async def measure(workers: int, calls: int, duration: float, ramp_up: float, redis_url: str,
                  run_dir: Path, tts_url: str) -> Run:
    client = aioredis.from_url(redis_url)
    await client.flushdb()
    token = secrets.token_urlsafe(24)
    port = servers.free_port()
    base = f"http://127.0.0.1:{port}"
    here = run_dir / f"workers-{workers}"
    here.mkdir()
    env = {"BRIDGE_HOST": "127.0.0.1", "BRIDGE_PORT": str(port), "BRIDGE_PUBLIC_URL": base,
           "BRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{here / 'bridge.db'}",
           "BRIDGE_LOG_LEVEL": "warning", "BRIDGE_LOG_FORMAT": "json",
           "BRIDGE_SILMA_ENDPOINT": tts_url, "BRIDGE_DEFAULT_USER_TOKEN": token,
           "BRIDGE_ALLOW_UNSIGNED_WEBHOOKS": "true", "BRIDGE_AGENT_KIND": "scripted",
           "BRIDGE_AGENT_GREETING": GREETING, "BRIDGE_REDIS_URL": redis_url,
           "BRIDGE_FLEET_INSTANCE_ID": f"lt{workers}",
           # The run's end is no drain under test: a short one (a webhook answered by one
           # worker whose stream another took holds the first one's drain to its deadline).
           "BRIDGE_CALL_DRAIN_DEADLINE_S": "1", "BRIDGE_CALL_MARK_TIMEOUT_S": "1"}
    bridge = servers.start_child("bridge", ["serve", "--workers", str(workers)], env, None,
                                 here / "bridge.stderr.log", base)
    try:
        bridge.wait_healthy("/health", 120)
        urls = await wait_members(client, workers, 60)
        pids = worker_pids(bridge.pid, workers)
        payloads = caller_payloads(noise_audio(duration + ramp_up + 10))
        clock = SharedClock()
        tally: collections.Counter[str] = collections.Counter()
        ttfa: list[float] = []
        callers: list[Caller] = []
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            t0 = loop.time()
            end_at = t0 + ramp_up + duration
            jobs = [asyncio.create_task(one_call(
                http, base, token, payloads, clock, t0 + ramp_up * i / calls, end_at, tally,
                ttfa, callers)) for i in range(calls)]
            await asyncio.sleep(ramp_up + 1.0)  # the ramp-up itself: then the steady window
            meters = [CpuMeter.process(pid) for pid in pids]
            supervisor = CpuMeter.process(bridge.pid) if workers > 1 else None
            machine = CpuMeter.machine()
            await asyncio.sleep(max(0.0, duration - 3.0))  # the window, ending before the end
            per_worker_cpu = [m.percent() or 0.0 for m in meters]
            supervisor_cpu = supervisor.percent() if supervisor is not None else None
            machine_cpu = machine.percent()
            per_worker_calls = [await live_calls(http, url) for url in urls] if workers > 1 \
                else [await live_calls(http, base)]
            await asyncio.gather(*jobs)
        underruns = sum(c.report().underruns for c in callers)
        tally["calls set up"] = len(callers)
        return Run(workers, calls, per_worker_calls, per_worker_cpu, supervisor_cpu,
                   machine_cpu, tally.pop("says", 0), ttfa, underruns, tally)
    finally:
        code = bridge.stop()
        if code not in (0, None):
            tail = bridge.log_path.read_text(errors="replace")[-600:]
            print(f"  bridge exited {code}: {tail}", file=sys.stderr)
        await client.flushdb()
        await client.aclose()


def _pct(values: list[float], q: float) -> str:
    if not values:
        return "-"
    return f"{float(np.percentile(values, q)):.0f}"


def report(runs: list[Run], cores: int) -> str:
    rows: list[tuple[str, ...]] = [(
        "workers", "calls", "calls per worker", "CPU per worker (% of a core)",
        "bridge CPU (all)", "machine CPU", "replies", "TTFA p50/p95 ms", "underruns",
        f"calls per machine ({cores} cores, projected)")]
    for r in runs:
        per_machine = r.per_machine(cores)
        rows.append((
            str(r.workers), str(r.calls), " / ".join(map(str, r.per_worker_calls)),
            " / ".join(f"{c:.0f}" for c in r.per_worker_cpu),
            f"{r.bridge_cpu:.0f}%" + (f" (supervisor {r.supervisor_cpu:.1f}%)"
                                      if r.supervisor_cpu is not None else ""),
            f"{r.machine_cpu:.0f}%" if r.machine_cpu is not None else "-",
            str(r.replies), f"{_pct(r.ttfa_ms, 50)} / {_pct(r.ttfa_ms, 95)}", str(r.underruns),
            f"{per_machine:.0f}" if per_machine is not None else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
             for row in rows]
    for r in runs:
        others = {k: v for k, v in r.errors.items() if k != "calls set up"}
        lines.append(f"workers {r.workers}: {r.errors['calls set up']} calls set up; "
                     f"problems: {dict(others) or 'none'}")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    counts = [int(n) for n in args.workers.split(",")]
    cores = len(os.sched_getaffinity(0))
    run_dir = Path(tempfile.mkdtemp(prefix="loadtest-workers-"))
    tts = servers.start_standin(run_dir, None, first_audio_s=0.15, rtf=0.12)
    runs = []
    try:
        tts.wait_healthy("/health", 180)
        print(f"{args.calls} calls for {args.duration:.0f} s (ramp-up {args.ramp_up:.0f} s) "
              f"against workers {counts}; TTS stand-in {tts.url}; {cores} cores", flush=True)
        for workers in counts:
            started = time.monotonic()
            run = await measure(workers, args.calls, args.duration, args.ramp_up, args.redis,
                                run_dir, tts.url)
            runs.append(run)
            print(f"  workers {workers}: done in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        tts.stop()
    print()
    print(report(runs, cores))
    return 0 if all(r.underruns == 0 for r in runs) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--ramp-up", type=float, default=5.0)
    parser.add_argument("--workers", default="1,2", help="worker counts to compare")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    sys.exit(asyncio.run(main(parser.parse_args())))
