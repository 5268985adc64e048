#!/usr/bin/env python3
"""What a caller hears when the TTS server fails mid-reply (issue 16, item 5).

Starts a bridge as `make run` does (local mode: our TTS server with Piper as a supervised child
process), places one emulated Twilio call, has the bridge say a long reply, and `kill -9`s the
TTS child `--kill-after` seconds after the reply's first audio reached the caller. Each run is
measured side by side with the same reply undisturbed:

- audio heard: seconds of the reply the caller received, against the undisturbed run;
- silence heard mid-reply: the caller's playout buffer running dry (underrun seconds);
- whether the reply played out to its mark, and what the agent was told.

    .venv/bin/python scripts/measure_tts_faults.py [--runs 3] [--kill-after 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadtest_lib.servers import Child, start_bridge

from bridge.emulator.call import CallEmulator
from bridge.emulator.runner import request_say, run_call

TOKEN = "faults-operator-token"
GREETING = "Hello."
# About a minute of Piper speech: sentences, so the bridge streams it piece by piece.
REPLY = " ".join(
    f"This is sentence number {n} of a long answer that keeps the caller listening for a while."
    for n in range(1, 13)
)


def tts_child(bridge: Child) -> psutil.Process:
    """The local TTS server: the bridge's child running `python -m bridge tts-server`."""
    for proc in psutil.Process(bridge.pid).children(recursive=True):
        if "tts-server" in " ".join(proc.cmdline()):
            return proc
    raise RuntimeError("the bridge has no local TTS server child")


async def one_call(bridge: Child, kill_after_s: float | None) -> dict[str, object]:
    killed_at: list[float] = []

    async def talk(call: CallEmulator) -> str | None:
        await call.wait_for_marks(1)
        target = call.marks_settled + 1
        call.expect_utterance("reply")
        async with aiohttp.ClientSession() as http:
            if problem := await request_say(http, bridge.url, call.call_sid, REPLY, TOKEN):
                return problem
        if kill_after_s is not None:
            await call.wait_first_media()
            await asyncio.sleep(kill_after_s)  # the fault's timing, not a wait for a condition
            child = tts_child(bridge)
            os.kill(child.pid, signal.SIGKILL)
            killed_at.append(time.monotonic())
        await call.wait_for_marks(target)
        return None

    started = time.monotonic()
    report = await run_call(bridge.url, talk=talk, max_seconds=180, control_token=TOKEN,
                            record=False)
    reply = report.utterances[-1] if report.utterances else None
    return {
        "ok": report.ok,
        "error": report.error,
        "audio_s": report.audio_seconds,
        "silence_s": report.underrun_seconds,
        "underruns": report.underruns,
        "first_audio_s": None if reply is None else reply.first_audio_s,
        "played_out": reply is not None and reply.playout_done_s is not None,
        "kill_at_s": None if not killed_at else killed_at[0] - started,
    }


async def wait_local_tts(bridge: Child, timeout_s: float) -> None:
    """Until the (restarted) local TTS child answers its health check."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(f"{bridge.url}/api/pool",
                                headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                pools = await resp.json() if resp.status == 200 else {}
            if any(p.get("ready") for p in pools.get("pools", [])):
                return
            await asyncio.sleep(0.5)  # polling an HTTP status: nothing to wait on instead
    raise RuntimeError("the local TTS server did not come back")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kill-after", type=float, default=3.0,
                        help="seconds after the reply's first audio to kill the TTS server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        run_dir = Path(tmp)
        bridge = start_bridge(run_dir, None, db_dir=run_dir, tts_url="", token=TOKEN,
                              greeting=GREETING, extra_env={"BRIDGE_LOG_LEVEL": "info"})
        try:
            bridge.wait_healthy("/health", 120)
            rows = []
            for run in range(1, args.runs + 1):
                for kill in (None, args.kill_after):
                    await wait_local_tts(bridge, 120)
                    label = "undisturbed" if kill is None else f"kill -9 at +{kill:g} s"
                    print(f"run {run}/{args.runs}: {label} ...", flush=True)
                    row = await one_call(bridge, kill)
                    row["label"] = label
                    rows.append(row)
                    print(f"  audio {row['audio_s']:.2f} s, silence mid-reply "
                          f"{row['silence_s']:.2f} s ({row['underruns']} gaps), played out: "
                          f"{row['played_out']}, error: {row['error']}", flush=True)
        finally:
            bridge.stop()
            log = (run_dir / "bridge.stderr.log").read_text(errors="replace")
    print()
    print(f"{'':24} {'audio heard s':>14} {'silence s':>10} {'played out':>11}")
    for label in ("undisturbed", f"kill -9 at +{args.kill_after:g} s"):
        mine = [r for r in rows if r["label"] == label]
        audio = statistics.median(float(str(r["audio_s"])) for r in mine)
        silence = statistics.median(float(str(r["silence_s"])) for r in mine)
        print(f"{label:24} {audio:>14.2f} {silence:>10.2f} "
              f"{sum(bool(r['played_out']) for r in mine):>8}/{len(mine)}")
    restarts = log.count("local_tts_server_restarted")
    failed = log.count("tts_failed") + log.count("playback_failed")
    print(f"TTS child restarts: {restarts}; pieces reported failed in the bridge log: {failed}")


if __name__ == "__main__":
    asyncio.run(main())
