#!/usr/bin/env python3
"""What SIGTERM does to live calls (issue 18, part 4): emulated calls on a real bridge process
(sim TTS server: the GPU latency model, room for every request), then SIGTERM.

Every call is talking (a long greeting) when the signal comes, `--talk-before` seconds after
they connected. `--finishing` of them hang up on their own halfway to the drain deadline (as
callers do); the others are still talking at the deadline. `--stalled` more are peers that
stopped reading (tests/stalled_peer.py: their send queue is full by the signal, they never echo
a mark nor answer a close). Reported from the bridge's own log
lines (one `call` line per call, one `utterance` line per utterance) and the process: calls
live at SIGTERM, those that finished normally, those drained with the goodbye heard, the time
from SIGTERM to the process's exit and its exit code. `--bridge-src` runs another checkout's
bridge (an older commit, side by side).

    .venv/bin/python scripts/measure_drain.py [--calls 20] [--finishing 10] [--stalled 1]
        [--deadline 20] [--talk-before 12] [--bridge-src DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtest_lib.servers import REPO, Child, start_bridge, start_tts

from bridge.emulator.clock import MediaClock
from bridge.emulator.twilio_wire import TwilioCallEmulator, fetch_twiml
from bridge.emulator.wire import CallFailed
from bridge.settings import load_settings
from tests.stalled_peer import StalledPeer

TOKEN = "measure-drain-token"
# About 40 s of speech from the sim engine (65 ms a character): still talking at the deadline.
GREETING = " ".join(["Thank you for calling. This greeting goes on for a long time, sentence "
                     "after sentence, so that the call is still talking when the bridge is "
                     "told to stop."] * 4)
GOODBYE = load_settings(env={}).call.drain_goodbye
EXIT_WAIT_S = 120.0  # an old bridge stuck on a stalled peer: given up on after this


def say(message: str) -> None:
    print(message, flush=True)


async def place(http: aiohttp.ClientSession, bridge: Child, call_sid: str, clock: MediaClock
                ) -> TwilioCallEmulator:
    stream_url, params = await fetch_twiml(http, f"{bridge.url}/twilio/voice",
                                           {"CallSid": call_sid}, None)
    call = TwilioCallEmulator(http, stream_url, call_sid=call_sid, parameters=params,
                              record=False, media_clock=clock)
    await call.connect(greetings=1)
    async with asyncio.timeout(20):
        await call.wait_first_media()
    return call


async def status_after_signal(http: aiohttp.ClientSession, bridge: Child, signalled: float
                              ) -> tuple[str, str]:
    """What the load balancer and a new call get during the drain: how soon readiness says
    503 (asked every 10 ms), and the answer to a webhook after that."""
    statuses: list[int] = []
    try:
        while time.monotonic() < signalled + 5 and 503 not in statuses:
            async with http.get(f"{bridge.url}/api/ready") as ready:
                statuses.append(ready.status)
            await asyncio.sleep(0.01)
    except aiohttp.ClientError as exc:  # a bridge that does not drain closes its listener
        return f"no answer ({type(exc).__name__})", "no answer"
    readiness = (f"HTTP 503 {(time.monotonic() - signalled) * 1000:.0f} ms after SIGTERM"
                 if 503 in statuses else f"never 503 within 5 s (HTTP {set(statuses)})")
    try:
        await fetch_twiml(http, f"{bridge.url}/twilio/voice", {"CallSid": "CAafter"}, None)
        webhook = "answered (streamed)"
    except CallFailed as exc:
        webhook = str(exc)
    return readiness, webhook


async def closed_at(call: TwilioCallEmulator) -> float:
    await call.wait_closed()
    return time.monotonic()


def exit_of(bridge: Child) -> tuple[int | None, float]:
    """The bridge's exit code (None: it did not exit in EXIT_WAIT_S) and when it exited."""
    try:
        code: int | None = bridge.proc.wait(EXIT_WAIT_S)
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic()


async def hang_up(calls: list[TwilioCallEmulator], after_s: float, signalled: float) -> None:
    """These callers hang up on their own, `after_s` after SIGTERM (before the deadline)."""
    await asyncio.sleep(signalled + after_s - time.monotonic())  # the callers' own pace
    live = [call for call in calls if not call.closed]
    for call in live:
        await call.stop()
    say(f"  {len(live)} callers hung up at +{time.monotonic() - signalled:.1f} s"
        + (f" ({len(calls) - len(live)} were cut off before)" if len(live) < len(calls) else ""))


def bridge_log(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


async def run(args: argparse.Namespace, run_dir: Path, src: Path) -> None:
    tts = start_tts(run_dir, None, first_audio_s=0.15, rtf=0.12, engine="sim")
    bridge: Child | None = None
    try:
        await asyncio.to_thread(tts.wait_healthy, "/health", 120)
        bridge = start_bridge(
            run_dir, None, db_dir=run_dir, tts_url=tts.url, token=TOKEN, greeting=GREETING,
            extra_env={"BRIDGE_LOG_LEVEL": "info",
                       "BRIDGE_CALL_DRAIN_DEADLINE_S": str(args.deadline)}, src=src)
        await asyncio.to_thread(bridge.wait_healthy, "/health", 60)
        say(f"bridge {src} on {bridge.url}, TTS {tts.url} (sim); drain deadline "
            f"{args.deadline:g} s")
        clock = MediaClock()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            calls = [await place(http, bridge, f"CAdrain{i:03d}", clock)
                     for i in range(args.calls)]
            say(f"{len(calls)} calls talking")
            stalled = []
            for i in range(args.stalled):
                stream_url, params = await fetch_twiml(
                    http, f"{bridge.url}/twilio/voice", {"CallSid": f"CAstall{i:03d}"}, None)
                peer = StalledPeer(stream_url, f"CAstall{i:03d}", params)
                await peer.connect()
                stalled.append(peer)
            say(f"{len(stalled)} stalled peers (stopped reading); talking for "
                f"{args.talk_before:g} s")
            await asyncio.sleep(args.talk_before)  # the calls' own pace, not a condition
            async with http.get(f"{bridge.url}/health") as health:
                live = (await health.json())["live_calls"]
            say(f"SIGTERM with {live} calls live")
            bridge.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            exited = asyncio.create_task(asyncio.to_thread(exit_of, bridge))
            closes = [asyncio.create_task(closed_at(call)) for call in calls]
            readiness, webhook = await status_after_signal(http, bridge, signalled)
            say(f"  readiness: {readiness}; a new call's webhook: {webhook}")
            hang_ups = asyncio.create_task(hang_up(calls[:args.finishing], args.deadline / 2,
                                                   signalled))
            code, exited_at = await exited
            exit_s = exited_at - signalled
            say(f"  exited: code {code} after {exit_s:.1f} s" if code is not None else
                f"  not exited {EXIT_WAIT_S:.0f} s after SIGTERM: killed")
            bridge.stop()
            await hang_ups
            talking_closed = [at - signalled for at in await asyncio.gather(*closes)]
            for call in calls:
                await call.abort()
            for peer in stalled:
                await peer.close()
        report(args, bridge, live, readiness, webhook, code, exit_s,
               talking_closed[args.finishing:])
    finally:
        if bridge is not None:
            bridge.stop()
        tts.stop()


def report(args: argparse.Namespace, bridge: Child, live: int, readiness: str, webhook: str,
           code: int | None, exit_s: float, kept_closed: list[float]) -> None:
    """`kept_closed`: when the streams of the calls that kept talking closed, after SIGTERM."""
    events = bridge_log(bridge.log_path)
    ends = {e["call_id"]: e["end_reason"] for e in events if e.get("event") == "call"}
    heard = {e["call_id"] for e in events if e.get("event") == "utterance"
             and e.get("text") == GOODBYE and e.get("outcome") == "played"}
    reasons = collections.Counter(ends.values())
    normal = sum(1 for reason in ends.values() if reason in ("stop", "hangup"))
    drained_heard = sum(1 for cid, reason in ends.items() if reason == "drained" and cid in heard)
    drained_cut = reasons["drained"] - drained_heard
    placed = args.calls + args.stalled
    say("")
    say(f"calls live at SIGTERM                 {live} ({args.calls} talking, "
        f"{args.stalled} stalled)")
    say(f"readiness during the drain            {readiness}")
    say(f"a new call during the drain           {webhook}")
    say(f"finished normally (caller hung up)    {normal}")
    say(f"drained, goodbye heard to its mark    {drained_heard}")
    say(f"drained, goodbye not heard            {drained_cut}")
    say(f"end reasons                           {dict(sorted(reasons.items()))}")
    if kept_closed:
        say(f"streams of the calls still talking    closed {min(kept_closed):.1f}-"
            f"{max(kept_closed):.1f} s after SIGTERM")
    say(f"call log lines filed                  {len(ends)} of {placed}")
    say("SIGTERM to exit                       "
        + (f"{exit_s:.1f} s, exit code {code}" if code is not None
           else f"no exit within {EXIT_WAIT_S:.0f} s (killed)"))
    finished = [e for e in events if e.get("event") == "drain_finished"]
    if finished:
        say(f"bridge's drain_finished line          seconds={finished[0]['seconds']} "
            f"hung_up={finished[0]['hung_up']} closed_at_end={finished[0]['closed_at_end']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--finishing", type=int, default=10,
                        help="of the calls, how many hang up on their own before the deadline")
    parser.add_argument("--stalled", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=20.0,
                        help="BRIDGE_CALL_DRAIN_DEADLINE_S")
    parser.add_argument("--talk-before", type=float, default=12.0,
                        help="seconds the calls talk before SIGTERM (a stalled peer's send "
                             "queue is full after about 9 s on loopback)")
    parser.add_argument("--bridge-src", help="another checkout's root (e.g. an older commit)")
    args = parser.parse_args()
    if not 0 <= args.finishing <= args.calls:
        parser.error("--finishing must be between 0 and --calls")
    with tempfile.TemporaryDirectory() as run_dir:
        src = Path(args.bridge_src).resolve() if args.bridge_src else REPO
        asyncio.run(run(args, Path(run_dir), src))


if __name__ == "__main__":
    main()
