#!/usr/bin/env python3
"""Load test: N concurrent emulated Twilio/Plivo calls on one bridge process pinned to one core.

    .venv/bin/pip install -e '.[bench]'      # psutil, matplotlib
    .venv/bin/python scripts/loadtest.py --levels 25,100,200 --duration 20 --plot out.png

Unless --bridge-url is given, starts a TTS server (GPU-like: first audio 0.15 s, RTF 0.12, never
busy) and `python -m bridge serve` with a temporary SQLite database; the bridge runs on core 0,
this generator and the TTS server on the other cores. Per level, calls ramp up over --ramp-up s,
then talk for --duration s: after the greeting each call asks POST /calls/{id}/say for a
three-sentence reply, waits until the emulated provider has played it out (its mark echoed),
asks again, and so on; caller audio (silence or low noise) flows in real time the whole time,
one media message per call every 20 ms. Then every call hangs up and the next level starts.

The generator must cost clearly less per call than the bridge, or at 500 calls it measures its
own core (it did: 76% + the sim TTS server's 14% of the core they share). So by default:
- the call legs are the load test's own (loadtest_lib/caller.py): the emulator's wire classes,
  messages, jitter buffer and report, but a WebSocket protocol of our own that handles each
  message inside the socket read, caller frames from per-call templates written on one shared
  timer (loadtest_lib/shared_clock.py, media_frames.py), the bridge's media read for its size
  (outbound.py); --generator emulator runs the emulator's CallEmulator instead (run_call);
- the TTS server is a stand-in (loadtest_lib/tts_standin.py): our protocol, the sim engine's
  speech, first-audio latency and real-time factor, each distinct reply rendered once and then
  replayed from memory; --tts sim runs `python -m bridge tts-server --engine sim` instead.
What is left is the kernel's: ~10 µs of the generator's CPU per caller message written on this
machine (the loopback's receive path runs in the sender's system call), 25,000 a second at 500
calls.

What it measures, per level (the steady window, after ramp-up):
- TTFA: say request -> first media frame at the caller (per reply; the caller's timings).
- bridge overhead, bridge TTFA, mark echo lag: from GET /calls/{id}/trace of a sample of calls.
  Echo lag = playout_lag_ms (last frame sent -> echo read by the bridge) minus the utterance's
  max lead (the audio the caller still had buffered when the last frame went): what remains
  is how late the bridge read the echo behind the caller's inbound audio.
- inbound backlog: bytes the bridge has not read yet on each call's socket (rx_queue in
  /proc/net/tcp, sampled each second), in ms of caller audio at the provider's message size.
- underruns (the caller's jitter buffer, bridge/emulator/playout.py, ran dry inside an
  utterance), errors, clears, CPU of the bridge / TTS server / generator (psutil) and the
  bridge's RSS.
- the generator's own lateness: an event-loop probe (every 10 ms) and the media clock that
  sends every call's caller audio (how late its ticks came vs their schedule).
- with --tts-servers 2 and --kill-tts-after S: the bridge's endpoint lists both TTS servers,
  the first is killed (-9) S seconds into each level's steady window; TTS retries and pieces
  given up (/metrics), and the TTFA of the replies asked in the 5 s after the kill.

A level is INVALID when its numbers measure something else than the bridge: the generator fell
behind (probe p99 > 20 ms, or its core saturated), or other processes took the bridge's core
(it waited, runnable, > 10% of the time: /proc schedstat). On a shared machine, --nice -10
(as root) keeps other processes' load out of the numbers; the TTS server always runs 5 nice
levels below the generator, whose timing matters more on the core they share.

Each run is a sample on a shared machine: the README gives the median and spread of three,
`--json` each, then `--summarize run1.json run2.json run3.json` (loadtest_lib/summary.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import os
import random
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import numpy as np
import orjson
from loadtest_lib import servers
from loadtest_lib.caller import open_call
from loadtest_lib.media_frames import caller_payloads
from loadtest_lib.meters import CpuMeter
from loadtest_lib.shared_clock import SharedClock
from loadtest_lib.stats import (
    MAX_OTHER_CPU_PCT,
    Dist,
    LevelResult,
    format_table,
    invalid_reasons,
    percentile,
    prometheus_totals,
    saturation_level,
    scan_log,
)
from loadtest_lib.tcp_queues import receive_queues

from bridge.audio.mulaw import lin2ulaw
from bridge.emulator.clock import MediaClock
from bridge.emulator.playout import PlayoutBuffer
from bridge.emulator.report import CallReport, UtteranceTiming
from bridge.emulator.runner import emulator_class, request_say, run_call
from bridge.emulator.wire import FRAME_SECONDS, describe
from bridge.errors import BridgeError

GREETING = "Hello, and thank you for calling the SILMA demo line. How can I help you today?"
# Three short sentences (~5 s of sim speech): several replies per call and level.
REPLY = "Your table is booked for eight. We will text you a reminder. Anything else for today?"
MAX_CALLS = 2000  # per level: bounded, whatever the command line says
MAX_DURATION_S = 600.0
SETUP_TIMEOUT_S = 15.0  # answer webhook + stream open, per call
MARK_TIMEOUT_S = 30.0  # a reply not played out by then counts the call as failed
HANGUP_TIMEOUT_S = 10.0  # the emulator's own bound (runner.py)
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)
LAG_PROBE_S = 0.01
TTS_NICE_OFFSET = 5
DRAIN_TIMEOUT_S = 30.0  # between levels: wait for the bridge to end every call
FAILOVER_WINDOW_S = 5.0  # replies asked this soon after a TTS server was killed: its failover
WS_CLIENT_FRAME_OVERHEAD = 8  # header + mask of a masked text frame of 126-65535 bytes


# --- one call ---------------------------------------------------------------------------------


class CallLeg(Protocol):
    """What the load test uses of a call leg: the emulator's CallEmulator (--generator
    emulator) or the load test's own Caller (loadtest_lib/caller.py), which measure alike."""

    call_sid: str
    marks_settled: int
    playout: PlayoutBuffer
    clear_times: list[float]

    @property
    def closed(self) -> bool: ...

    def expect_utterance(self, label: str) -> UtteranceTiming: ...

    async def wait_for_marks(self, count: int) -> None: ...

    def report(self) -> CallReport: ...


@dataclass
class CallRecord:
    provider: str
    emulator: CallLeg | None = None
    up: bool = False  # the media stream opened
    error: str | None = None
    replies: list[tuple[float, UtteranceTiming]] = field(default_factory=list)  # (asked, timing)
    say_errors: list[str] = field(default_factory=list)
    trace: dict[str, Any] | None = None
    underruns_before: tuple[int, float] = (0, 0.0)  # at the steady window's start


@dataclass
class Shared:
    """What every call of a run uses."""

    http: aiohttp.ClientSession
    base: str
    token: str | None  # the API token
    caller_audio: bytes | None
    payloads: tuple[bytes, ...] = ()  # caller audio, base64 frames (the load test's caller)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


async def _wait_marks(em: CallLeg, count: int) -> None:
    try:
        async with asyncio.timeout(MARK_TIMEOUT_S):
            await em.wait_for_marks(count)
    except TimeoutError:
        # Not the level's end (that cancels this wait from outside): a stuck reply.
        raise BridgeError(f"reply not played out within {MARK_TIMEOUT_S:.0f} s") from None


async def level_call(
    rec: CallRecord,
    sh: Shared,
    start_at: float,
    end_at: float,
    clock: MediaClock,
    want_trace: bool,
) -> None:
    """At `start_at` (loop time), one call through the emulator's runner: talk until `end_at`,
    fetch the trace if asked, hang up."""
    await asyncio.sleep(start_at - asyncio.get_running_loop().time())
    try:
        report = await run_call(
            sh.base,
            provider=rec.provider,
            talk=functools.partial(_talk, rec, sh, end_at, want_trace),
            caller_audio=sh.caller_audio,
            record=False,
            max_seconds=None,  # the talk ends at the level's end
            setup_seconds=SETUP_TIMEOUT_S,
            session=sh.http,
            media_clock=clock,
        )
    except BridgeError as exc:
        rec.error = f"call setup: {describe(exc)}"
        return
    rec.error = report.error


async def level_call_lite(
    rec: CallRecord,
    sh: Shared,
    start_at: float,
    end_at: float,
    clock: SharedClock,
    want_trace: bool,
) -> None:
    """`level_call` with the load test's own caller (loadtest_lib/caller.py): the same answer
    webhook, stream, talk and hang-up, at a fraction of the emulator's cost per frame."""
    await asyncio.sleep(start_at - asyncio.get_running_loop().time())
    try:
        async with asyncio.timeout(SETUP_TIMEOUT_S):
            call = await open_call(sh.http, sh.base, rec.provider, sh.payloads, clock)
    except TimeoutError:
        rec.error = f"call setup: no call set up within {SETUP_TIMEOUT_S} s"
        return
    except (BridgeError, aiohttp.ClientError, OSError) as exc:
        rec.error = f"call setup: {describe(exc)}"
        return
    try:
        error = await _talk(rec, sh, end_at, want_trace, call)
    finally:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HANGUP_TIMEOUT_S):
                await call.stop()
    rec.error = call.close_reason or error


async def _talk(
    rec: CallRecord, sh: Shared, end_at: float, want_trace: bool, em: CallLeg
) -> str | None:
    """The load test's caller: after the greeting, asks for REPLY and waits until it has
    played out, again and again until `end_at`; then fetches the trace if asked."""
    loop = asyncio.get_running_loop()
    rec.emulator = em
    rec.up = True
    error = None
    try:
        async with asyncio.timeout_at(end_at):
            await _wait_marks(em, 1)
            while True:
                target = em.marks_settled + 1
                rec.replies.append((loop.time(), em.expect_utterance("reply")))
                problem = await request_say(sh.http, sh.base, em.call_sid, REPLY, sh.token)
                if problem is not None:
                    rec.say_errors.append(problem)
                    rec.replies.pop()
                    await asyncio.sleep(end_at - loop.time())  # keep the call up, stop asking
                await _wait_marks(em, target)
    except TimeoutError:
        pass  # the level is over
    except BridgeError as exc:
        error = str(exc)
    if want_trace:
        rec.trace = await _get_trace(sh, em.call_sid)
    return error


async def _get_trace(sh: Shared, call_id: str) -> dict[str, Any] | None:
    try:
        async with sh.http.get(
            f"{sh.base}/calls/{call_id}/trace", headers=sh.headers, timeout=HTTP_TIMEOUT
        ) as resp:
            if resp.status == 200:
                data = await resp.json(loads=orjson.loads)
                return data if isinstance(data, dict) else None
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        pass
    return None


async def _metrics(sh: Shared) -> dict[str, float]:
    try:
        async with sh.http.get(f"{sh.base}/metrics", headers=sh.headers,
                               timeout=HTTP_TIMEOUT) as resp:
            return prometheus_totals(await resp.text()) if resp.status == 200 else {}
    except (aiohttp.ClientError, OSError, TimeoutError):
        return {}


async def _live_calls(sh: Shared) -> int | None:
    try:
        async with sh.http.get(f"{sh.base}/health", timeout=HTTP_TIMEOUT) as resp:
            return int((await resp.json())["live_calls"])
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError, TypeError):
        return None


# --- measuring the generator and the processes ------------------------------------------------


class LagProbe:
    """The generator's event-loop lag: how late a 10 ms sleep wakes (every media send waits
    on the same loop)."""

    def __init__(self) -> None:
        self.samples: list[float] = []  # ms
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(LAG_PROBE_S)
            self.samples.append(max(0.0, time.perf_counter() - t - LAG_PROBE_S) * 1000)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _at_least_zero(meter: CpuMeter) -> float | None:
    return None if (pct := meter.percent()) is None else max(0.0, pct)


def run_queue_wait_s(pid: int) -> float:
    """Seconds the live threads of `pid` have spent runnable but not running (/proc schedstat).
    A thread that ends takes its share away: a meter over this can dip below zero."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(task.read_text().split()[1])
    return total / 1e9


def inbound_bytes_per_second(plivo_share: float) -> float:
    """What one call's caller audio costs on the wire, mixed by provider (silence payload)."""
    sizes = {}
    for provider in ("twilio", "plivo"):
        wire = emulator_class(provider).wire_type(None, None, None)
        wire.start()  # Plivo's media timestamps count from its start
        sizes[provider] = len(wire.media(1, 0, "/" * 216)) + WS_CLIENT_FRAME_OVERHEAD
    per_message = (1 - plivo_share) * sizes["twilio"] + plivo_share * sizes["plivo"]
    return per_message / FRAME_SECONDS


def noise_audio(seconds: float) -> bytes:
    """Low noise (about -55 dBFS) as mu-law, for --caller-audio noise."""
    rng = np.random.default_rng(7)
    return lin2ulaw(rng.integers(-60, 61, int(seconds * 8000), dtype=np.int16))


# --- one level --------------------------------------------------------------------------------


@dataclass
class Setup:
    shared: Shared
    bridge_pid: int | None
    tts_pid: int | None
    bridge_port: int | None  # to read its sockets' receive queues (loopback only)
    bridge_log: Path | None
    ramp_up_s: float
    duration_s: float
    plivo_share: float
    frames_per_wakeup: int | None
    trace_sample: int
    inbound_bps: float
    generator_cores: int
    generator: str = "lite"  # whose call legs: the load test's callers, or the emulator's
    tts: TTSServers | None = None  # our own TTS servers (None: an outside bridge)
    kill_tts_after_s: float | None = None


class TTSServers:
    """The TTS servers the bridge's endpoint lists (`kind`: "standin", the pre-rendered
    loadtest_lib/tts_standin.py, or "sim", `python -m bridge tts-server --engine sim`); the
    first can be killed mid-level and started again (same port) before the next."""

    def __init__(self, out_dir: Path, cpus: set[int] | None, count: int, kind: str, *,
                 first_audio_s: float, rtf: float, nice: int):
        self._out_dir, self._cpus, self._kind = out_dir, cpus, kind
        self._first_audio_s, self._rtf, self._nice = first_audio_s, rtf, nice
        self.children = [self._start(i, None) for i in range(count)]
        for child in self.children:
            child.wait_healthy("/health", 180)

    def _start(self, index: int, port: int | None) -> servers.Child:
        run_dir = self._out_dir / f"tts-{index}" if index else self._out_dir
        run_dir.mkdir(exist_ok=True)
        if self._kind == "standin":
            return servers.start_standin(run_dir, self._cpus, first_audio_s=self._first_audio_s,
                                         rtf=self._rtf, nice=self._nice, port=port)
        return servers.start_tts(run_dir, self._cpus, first_audio_s=self._first_audio_s,
                                 rtf=self._rtf, engine="sim", nice=self._nice, port=port)

    @property
    def endpoint(self) -> str:
        return ", ".join(child.url for child in self.children)

    def kill_first(self) -> None:
        os.kill(self.children[0].pid, signal.SIGKILL)

    def revive_first(self) -> None:
        first = self.children[0]
        if first.proc.poll() is None:
            return
        first.stop()
        port = int(first.url.rsplit(":", 1)[1])
        self.children[0] = self._start(0, port)
        self.children[0].wait_healthy("/health", 180)


def _providers(n: int, plivo_share: float) -> list[str]:
    plivo = round(n * plivo_share)
    mix = ["plivo"] * plivo + ["twilio"] * (n - plivo)
    random.Random(n).shuffle(mix)
    return mix


def _backlog_ms(port: int, bps: float) -> list[float]:
    return [q / bps * 1000 for q in receive_queues(port)]


async def run_level(setup: Setup, n: int) -> LevelResult:
    loop = asyncio.get_running_loop()
    sh = setup.shared
    fpw = setup.frames_per_wakeup or 1
    result = LevelResult(calls=n, duration_s=setup.duration_s, frames_per_wakeup=fpw)
    records = [CallRecord(p) for p in _providers(n, setup.plivo_share)]
    trace_every = max(1, n // max(1, setup.trace_sample))
    t_start = loop.time()
    ramp_end = t_start + setup.ramp_up_s
    end = ramp_end + setup.duration_s
    # A random phase within one media batch each, as real calls have: evenly spaced starts
    # would wake whole groups of senders in the same millisecond.
    rng = random.Random(n)
    starts = [
        t_start + i * setup.ramp_up_s / n + rng.uniform(0, fpw * FRAME_SECONDS) for i in range(n)
    ]
    clock: MediaClock | SharedClock
    if setup.generator == "emulator":
        clock = MediaClock(fpw)
        calls = [level_call(rec, sh, start, end, clock, i % trace_every == 0)
                 for i, (rec, start) in enumerate(zip(records, starts, strict=True))]
    else:
        clock = SharedClock(fpw)
        calls = [level_call_lite(rec, sh, start, end, clock, i % trace_every == 0)
                 for i, (rec, start) in enumerate(zip(records, starts, strict=True))]
    tasks = [asyncio.create_task(call) for call in calls]
    probe = LagProbe()
    probe.start()
    bridge, tts = CpuMeter.process(setup.bridge_pid), CpuMeter.process(setup.tts_pid)
    gen, machine = CpuMeter.process(os.getpid()), CpuMeter.machine()
    tick_cpu = CpuMeter.process(setup.bridge_pid)
    bridge_pid = setup.bridge_pid
    wait = CpuMeter((lambda: run_queue_wait_s(bridge_pid)) if bridge_pid is not None else None)
    gen_wait = CpuMeter(lambda: run_queue_wait_s(os.getpid()))
    log_offset = setup.bridge_log.stat().st_size if setup.bridge_log else 0
    metrics0: dict[str, float] = {}
    backlog: list[float] = []
    rss: list[float] = []
    steady_t0: float | None = None
    killed_at: float | None = None
    next_tick = t_start + 1
    while (now := loop.time()) < end:
        await asyncio.sleep(max(0.0, min(next_tick, end) - now))
        next_tick += 1
        kill_after = setup.kill_tts_after_s
        if (setup.tts is not None and kill_after is not None and killed_at is None
                and steady_t0 is not None and loop.time() >= steady_t0 + kill_after):
            setup.tts.kill_first()
            killed_at = loop.time()
            print(f"  kill -9 of TTS server 1 at +{killed_at - steady_t0:.1f} s", flush=True)
        if steady_t0 is None and loop.time() >= ramp_end:
            steady_t0 = loop.time()
            clock.reset_lateness()
            for rec in records:
                if (em := rec.emulator) is not None:
                    rec.underruns_before = (em.playout.underruns, em.playout.underrun_seconds)
            gc.freeze()  # the calls' long-lived objects too: young collections stay short
            probe.samples.clear()
            for meter in (bridge, tts, gen, machine, wait, gen_wait):
                meter.restart()
            metrics0 = await _metrics(sh)
        queues = []
        if setup.bridge_port:
            # In a thread: the kernel takes a few ms to list a few hundred sockets, a stall
            # the generator's own lateness would show (loadtest_lib/tcp_queues.py).
            queues = await asyncio.to_thread(_backlog_ms, setup.bridge_port, setup.inbound_bps)
        if steady_t0 is not None:
            backlog += queues
            if (mib := bridge.rss_mib()) is not None:
                rss.append(mib)
        _progress(
            n,
            records,
            loop.time() - t_start,
            steady_t0 is not None,
            probe.samples[-int(1 / LAG_PROBE_S) :],
            tick_cpu.percent(),
            queues,
        )
        tick_cpu.restart()
    steady_t0 = steady_t0 if steady_t0 is not None else t_start
    result.bridge_cpu_pct, result.tts_cpu_pct = bridge.percent(), tts.percent()
    result.generator_cpu_pct = gen.percent()
    result.bridge_wait_pct, result.generator_wait_pct = (
        _at_least_zero(wait),
        _at_least_zero(gen_wait),
    )
    if (total := machine.percent()) is not None and setup.bridge_pid is not None:
        ours = (result.bridge_cpu_pct or 0) + (result.tts_cpu_pct or 0)
        result.other_cpu_pct = max(0.0, total - ours - (result.generator_cpu_pct or 0))
    result.bridge_rss_mib = max(rss, default=None)
    lag = list(probe.samples)
    if clock.ticks:
        result.clock_late_mean_ms = 1000 * clock.lateness_sum_s / clock.ticks
        result.clock_late_max_ms = 1000 * clock.lateness_max_s
    await probe.stop()
    _, pending = await asyncio.wait(tasks, timeout=MARK_TIMEOUT_S + 30)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if isinstance(clock, SharedClock):
        clock.close()
    metrics1 = await _metrics(sh)

    _fill(result, records, steady_t0, end, killed_at)
    if killed_at is not None:
        result.tts_killed_at_s = killed_at - steady_t0
    result.backlog_ms = Dist.of(backlog)
    result.generator_lag_ms = Dist.of(lag)

    def delta(name: str) -> int:
        return round(metrics1.get(name, 0.0) - metrics0.get(name, 0.0))

    result.bridge_errors = delta("bridge_errors_total")
    result.tts_retries = delta("bridge_tts_retries_total")
    result.pieces_lost = delta("bridge_playback_failed_total")
    result.bridge_underruns = delta("bridge_underruns_total")
    if setup.bridge_log is not None:
        with setup.bridge_log.open(errors="replace") as f:
            f.seek(log_offset)
            result.log_errors, examples = scan_log(f)
        result.examples += [f"bridge log: {e}" for e in examples]
    result.invalid = invalid_reasons(
        result.generator_lag_ms.p99,
        result.generator_cpu_pct,
        result.tts_cpu_pct,
        setup.generator_cores,
        result.bridge_wait_pct,
    )
    return result


def _progress(
    n: int,
    records: list[CallRecord],
    elapsed: float,
    steady: bool,
    lag_last_s: list[float],
    bridge_cpu: float | None,
    backlog: list[float],
) -> None:
    ems = [r.emulator for r in records if r.up and r.emulator is not None]
    print(
        f"[{n:>4} calls] {'steady' if steady else 'ramp  '} t={elapsed:5.1f}s  "
        f"up {sum(not e.closed for e in ems):>4}/{n}  "
        f"utterances done {sum(e.marks_settled for e in ems):>5}  "
        f"underruns {sum(e.playout.underruns for e in ems):>4}  "
        f"gen lateness p99 {percentile(lag_last_s, 99) or 0:5.1f} ms  "
        f"bridge CPU {'-' if bridge_cpu is None else f'{bridge_cpu:3.0f}%'}  "
        f"inbound backlog max {max(backlog, default=0):4.0f} ms",
        flush=True,
    )


def _fill(result: LevelResult, records: list[CallRecord], steady_t0: float, end: float,
          killed_at: float | None = None) -> None:
    """The per-call part of a level's result (`killed_at`: when a TTS server was killed)."""
    ttfa, greeting, overhead, bridge_ttfa, echo, after_kill = [], [], [], [], [], []
    examples: list[str] = []
    for rec in records:
        result.calls_up += rec.up
        result.say_errors += len(rec.say_errors)
        problems = ([rec.error] if rec.error else []) + rec.say_errors
        if rec.error:
            result.calls_failed += 1
        em = rec.emulator
        if em is not None and rec.up:
            report = em.report()
            underruns = report.underruns - rec.underruns_before[0]
            result.underruns += underruns
            result.underrun_s += report.underrun_seconds - rec.underruns_before[1]
            result.calls_with_underruns += underruns > 0
            result.protocol_violations += len(report.protocol_violations)
            result.clears += len(em.clear_times)
            problems += report.protocol_violations
            first = report.utterances[0] if report.utterances else None
            if first is not None and first.first_audio_s is not None:
                greeting.append(first.first_audio_s * 1000)
        for asked, timing in rec.replies:
            if not steady_t0 <= asked < end:
                continue
            result.utterances += 1
            if timing.first_audio_s is not None:
                ttfa.append(timing.first_audio_s * 1000)
                if killed_at is not None and killed_at <= asked < killed_at + FAILOVER_WINDOW_S:
                    after_kill.append(timing.first_audio_s * 1000)
            if timing.playout_done_s is not None and not timing.cleared:
                result.utterances_played += 1
        for utt in (rec.trace or {}).get("utterance_traces", []):
            if (v := utt.get("bridge_overhead_ms")) is not None:
                overhead.append(v)
            if (v := utt.get("time_to_first_audio_ms")) is not None:
                bridge_ttfa.append(v)
            if (v := utt.get("playout_lag_ms")) is not None and utt.get("outcome") == "played":
                echo.append(v - utt.get("max_lead_ms", 0.0))
        for p in problems:
            if p not in examples and len(examples) < 5:
                examples.append(p)
    result.ttfa_ms = Dist.of(ttfa)
    result.greeting_ttfa_ms = Dist.of(greeting)
    result.overhead_ms = Dist.of(overhead)
    result.bridge_ttfa_ms = Dist.of(bridge_ttfa)
    result.echo_lag_ms = Dist.of(echo)
    result.ttfa_after_kill_ms = Dist.of(after_kill)
    result.examples = examples


# --- the run ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Load-test one bridge process with emulated Twilio/Plivo calls.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--calls", type=int, help="concurrent calls (one level)")
    size.add_argument("--levels", help="sweep: comma-separated call counts, one run each")
    size.add_argument(
        "--summarize",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="no run: the median and spread (min-max) per level of runs saved with --json",
    )
    p.add_argument("--duration", type=float, default=20.0, help="steady seconds per level")
    p.add_argument("--ramp-up", type=float, default=5.0, help="seconds to start a level's calls")
    p.add_argument("--plivo-share", type=float, default=0.3, help="fraction of Plivo calls")
    p.add_argument(
        "--caller-audio",
        choices=("silence", "noise"),
        default="silence",
        help="what callers send: mu-law silence (0xFF) or low noise",
    )
    p.add_argument(
        "--frames-per-wakeup",
        type=int,
        help="caller frames per media burst (default: 1, one message every 20 ms as the "
        "providers send)",
    )
    p.add_argument(
        "--trace-sample", type=int, default=40, help="calls per level whose bridge trace is fetched"
    )
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--plot", type=Path, help="write a PNG of TTFA and underruns vs calls")
    p.add_argument(
        "--out-dir", type=Path, help="the processes' logs (default: artifacts/loadtest-<time>)"
    )
    ext = p.add_argument_group("an already running bridge (no processes started)")
    ext.add_argument("--bridge-url", help="e.g. http://127.0.0.1:8080")
    ext.add_argument("--bridge-pid", type=int, help="its pid, to measure its CPU and memory")
    ext.add_argument(
        "--token",
        default=os.environ.get("BRIDGE_DEFAULT_USER_TOKEN", ""),
        help="its API token (default: $BRIDGE_DEFAULT_USER_TOKEN)",
    )
    p.add_argument(
        "--generator",
        choices=("lite", "emulator"),
        default="lite",
        help="whose call legs: the load test's own callers (loadtest_lib/caller.py: cheap per "
        "frame) or the emulator's (bridge/emulator: what `python -m bridge call` runs)",
    )
    own = p.add_argument_group("the processes this script starts")
    own.add_argument(
        "--tts",
        choices=("standin", "sim"),
        default="standin",
        help="TTS server: the pre-rendered stand-in (loadtest_lib/tts_standin.py) or "
        "`python -m bridge tts-server --engine sim`; the same protocol and latency model",
    )
    own.add_argument("--bridge-cpu", type=int, default=0, help="core the bridge is pinned to")
    own.add_argument("--sim-first-audio", type=float, default=0.15, help="TTS first audio (s)")
    own.add_argument("--sim-rtf", type=float, default=0.12, help="TTS real-time factor")
    own.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduling priority of this script and its processes; negative (e.g. -10, as "
        "root) keeps a busy machine's other processes from skewing the numbers",
    )
    own.add_argument("--bridge-src", type=Path, default=servers.REPO,
                     help="run the bridge of another checkout (a worktree of an older commit: "
                     "before and after on the same generator)")
    own.add_argument("--tts-servers", type=int, default=1,
                     help="sim TTS servers, all listed in the bridge's endpoint (1-4)")
    own.add_argument("--kill-tts-after", type=float, metavar="S",
                     help="kill -9 the first TTS server S seconds into each level's steady "
                     "window (needs --tts-servers 2 or more; restarted before the next level)")
    own.add_argument(
        "--bridge-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra BRIDGE_* setting for the bridge (repeatable)",
    )
    args = p.parse_args(argv)
    raw = [args.calls] if args.calls else [int(x) for x in (args.levels or "25").split(",")]
    if not raw or any(not 1 <= c <= MAX_CALLS for c in raw) or len(raw) > 10:
        p.error(f"1 to 10 levels of 1 to {MAX_CALLS} calls")
    if not 1 <= args.duration <= MAX_DURATION_S or not 0 <= args.ramp_up <= 120:
        p.error(f"--duration 1-{MAX_DURATION_S:.0f} s and --ramp-up 0-120 s")
    if not 0 <= args.plivo_share <= 1:
        p.error("--plivo-share is a fraction, 0-1")
    if not 1 <= args.tts_servers <= 4:
        p.error("--tts-servers 1-4")
    if args.kill_tts_after is not None and (args.tts_servers < 2 or args.bridge_url
                                            or not 0 <= args.kill_tts_after < args.duration):
        p.error("--kill-tts-after needs --tts-servers >= 2, our own processes, and a time "
                "within --duration")
    if any("=" not in kv or not kv.startswith("BRIDGE_") for kv in args.bridge_env):
        p.error("--bridge-env takes BRIDGE_NAME=VALUE")
    args.level_list = raw
    return args


def _cores(bridge_cpu: int) -> tuple[set[int] | None, set[int] | None]:
    """(bridge's cores, everyone else's), or (None, None) where pinning is impossible."""
    available = os.sched_getaffinity(0)
    if bridge_cpu not in available or len(available) < 2:
        print(
            f"warning: cannot pin the bridge to core {bridge_cpu} of {sorted(available)}; "
            "running unpinned",
            file=sys.stderr,
        )
        return None, None
    return {bridge_cpu}, available - {bridge_cpu}


async def run(args: argparse.Namespace, out_dir: Path) -> list[LevelResult]:
    children: list[servers.Child] = []
    bridge_cpus, other_cpus = (None, None) if args.bridge_url else _cores(args.bridge_cpu)
    stack = contextlib.ExitStack()  # the database's temporary folder, removed after the bridge
    try:
        base, token, bridge_pid = args.bridge_url, args.token, args.bridge_pid
        tts_pid: int | None = None
        tts: TTSServers | None = None
        log: Path | None = None
        if not args.bridge_url:
            token = secrets.token_urlsafe(24)
            extra = dict(kv.split("=", 1) for kv in args.bridge_env)
            # Blocking start-up: nothing else runs yet. The first start renders the sim's speech.
            tts = TTSServers(
                out_dir,
                other_cpus,
                args.tts_servers,
                args.tts,
                first_audio_s=args.sim_first_audio,
                rtf=args.sim_rtf,
                # Below the generator on their shared core: a late media send skews every
                # number, a TTS chunk a few ms late (0.5 s of audio each) changes nothing.
                nice=min(19, args.nice + TTS_NICE_OFFSET),
            )
            bridge = servers.start_bridge(
                out_dir,
                bridge_cpus,
                db_dir=Path(stack.enter_context(tempfile.TemporaryDirectory())),
                tts_url=tts.endpoint,
                token=token,
                greeting=GREETING,
                extra_env=extra,
                nice=args.nice,
                src=args.bridge_src,
            )
            children.append(bridge)
            bridge.wait_healthy("/health", 60)
            base, bridge_pid, log = bridge.url, bridge.pid, bridge.log_path
            tts_pid = tts.children[0].pid
            print(
                f"tts-server pid {tts_pid} on cores {sorted(other_cpus or [])}, bridge pid "
                f"{bridge.pid} at {base} on cores {sorted(bridge_cpus or [])}; logs in {out_dir}",
                flush=True,
            )
        if other_cpus:
            os.sched_setaffinity(0, other_cpus)
        idle = CpuMeter.machine()
        await asyncio.sleep(1)  # nothing of ours is busy yet: whatever runs is someone else's
        if (busy := idle.percent()) is not None and busy > MAX_OTHER_CPU_PCT:
            print(
                f"warning: the machine is already {busy:.0f}% busy (see `uptime`): "
                "levels will likely be INVALID",
                file=sys.stderr,
                flush=True,
            )
        host, _, port = base.removeprefix("http://").partition(":")
        longest = args.ramp_up + args.duration + MARK_TIMEOUT_S + 60
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            setup = Setup(
                shared=Shared(
                    http,
                    base.rstrip("/"),
                    token or None,
                    noise_audio(longest) if args.caller_audio == "noise" else None,
                    caller_payloads(noise_audio(longest))
                    if args.caller_audio == "noise" else (),
                ),
                bridge_pid=bridge_pid,
                tts_pid=tts_pid,
                bridge_port=int(port.split("/")[0]) if host == "127.0.0.1" and port else None,
                bridge_log=log,
                ramp_up_s=args.ramp_up,
                duration_s=args.duration,
                plivo_share=args.plivo_share,
                frames_per_wakeup=args.frames_per_wakeup,
                trace_sample=args.trace_sample,
                inbound_bps=inbound_bytes_per_second(args.plivo_share),
                generator_cores=len(other_cpus) if other_cpus else 1,
                generator=args.generator,
                tts=tts,
                kill_tts_after_s=args.kill_tts_after,
            )
            results = []
            for n in args.level_list:
                if tts is not None:
                    tts.revive_first()  # killed in the level before: back where it was
                # A full collection walks every live object (~80 ms after the imports here): a
                # pause that would count as generator lateness. Frozen ones are not walked.
                gc.unfreeze()
                gc.collect()
                gc.freeze()
                results.append(await run_level(setup, n))
                print(format_table(results[-1:]), flush=True)
                for example in results[-1].examples:
                    print(f"  e.g. {example}", flush=True)
                deadline = time.monotonic() + DRAIN_TIMEOUT_S
                while (await _live_calls(setup.shared)) not in (0, None):
                    if time.monotonic() > deadline:
                        print("warning: the bridge still has live calls", file=sys.stderr)
                        break
                    await asyncio.sleep(0.5)
                await asyncio.sleep(2)  # let the bridge settle between levels
            return results
    finally:
        for child in reversed((tts.children if tts is not None else []) + children):
            code = child.stop()
            if code not in (0, None, -15):
                print(
                    f"warning: {child.name} exited with {code}; see {child.log_path}",
                    file=sys.stderr,
                )
        stack.close()


def _run_async(coro: Coroutine[Any, Any, list[LevelResult]]) -> list[LevelResult]:
    try:
        import uvloop  # a faster loop: more calls before the generator falls behind
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def summarize(paths: list[Path]) -> int:
    from loadtest_lib.summary import format_summary, level_from_json

    runs = []
    for path in paths:
        try:
            data = orjson.loads(path.read_bytes())
            runs.append([level_from_json(level) for level in data["levels"]])
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            print(f"error: {path}: not a --json output of this script ({exc})", file=sys.stderr)
            return 2
    print(format_summary(runs))
    if any(r.invalid for run in runs for r in run):
        print("\n" + format_summary(runs, valid_only=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summarize:
        return summarize(args.summarize)
    try:
        import psutil  # noqa: F401 - fail early with the fix, not mid-run
    except ImportError:
        print("error: needs psutil and matplotlib: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    if args.nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # the children get it at their start
        except OSError as exc:
            print(f"warning: --nice {args.nice} not allowed ({exc}); running at 0", file=sys.stderr)
            args.nice = 0
    out_dir = args.out_dir or servers.REPO / "artifacts" / time.strftime("loadtest-%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        results = _run_async(run(args, out_dir))
    except (RuntimeError, BridgeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print("\n" + format_table(results))
    if (level := saturation_level(results)) is not None:
        print(f"bridge core saturated (>= 90% CPU) at {level} calls")
    if args.json:
        args.json.write_text(
            orjson.dumps(
                {
                    "config": {
                        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                    },
                    "levels": [r.to_json() for r in results],
                    "logs": str(out_dir),
                },
                option=orjson.OPT_INDENT_2,
            ).decode()
        )
        print(f"results: {args.json}")
    if args.plot:
        from loadtest_lib.plot import write_plot

        write_plot(results, args.plot)
        print(f"plot: {args.plot}")
    if not args.bridge_url:
        print(f"bridge log: {out_dir / 'bridge.stderr.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
