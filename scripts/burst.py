#!/usr/bin/env python3
"""Bursts of calls at once on the default `make run` bridge (issue 16's measurements).

Starts a bridge as `make run` does (local mode: our TTS server with Piper as a supervised
child, the default greeting), places one call to warm it up, then rings it with `--calls`
emulated Twilio calls at the same moment, once per phase:

- fresh: right after start, as a new user's first test does: admission knows only what the
  warm-up call measured, not yet what the TTS server announces (its health is checked every
  `pool.health_interval_s`);
- in-service: after that health check (asked for here through the operator's endpoint) and
  once the earlier burst's first-audio measurements have aged out: what a bridge in service
  decides on.

Per phase: calls admitted or answered busy, admitted callers who heard all of their greeting
(its audio as long as the warm-up call's), "into silence" (admitted, heard nothing: what
admission exists to prevent), and first audio after the stream's start.

    .venv/bin/python scripts/burst.py [--calls 30] [--phases fresh,in-service]
    git worktree add /tmp/before <commit> && \
        .venv/bin/python scripts/burst.py --phases fresh --bridge-src /tmp/before
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadtest_lib.servers import REPO, start_bridge

from bridge.emulator.runner import run_call
from bridge.emulator.wire import CallFailed, CallRefused
from bridge.settings import load_settings

TOKEN = "burst-operator-token"


async def one_call(http: aiohttp.ClientSession, url: str, limit_s: float) -> dict[str, Any]:
    try:
        report = await run_call(url, session=http, max_seconds=limit_s, record=False)
    except CallRefused:
        return {"admitted": False}
    except CallFailed as exc:
        return {"admitted": True, "error": str(exc), "audio_s": 0.0, "first_audio_s": None}
    greeting = report.utterances[0] if report.utterances else None
    return {"admitted": True, "error": report.error, "audio_s": report.audio_seconds,
            "first_audio_s": None if greeting is None else greeting.first_audio_s}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def in_service(http: aiohttp.ClientSession, url: str) -> None:
    """The pool's health checked (as every minute in service), and no first audio measured
    within the window (the earlier burst's must not decide this one)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with http.post(f"{url}/api/pool/health-check", headers=headers) as resp:
        resp.raise_for_status()
    for _ in range(120):
        async with http.get(f"{url}/api/pool", headers=headers) as resp:
            pools = (await resp.json())["pools"]
        if all(pool["capacity"]["first_audio_s"] is None for pool in pools):
            print(f"  TTS announces {pools[0]['capacity']}", flush=True)
            return
        await asyncio.sleep(0.5)  # polling an HTTP status for a window to pass
    raise SystemExit("first-audio measurements did not age out")


def row(phase: str, rows: list[dict[str, Any]], whole_s: float) -> str:
    admitted = [r for r in rows if r["admitted"]]
    heard = [r for r in admitted if r["audio_s"] > 0]
    whole = [r for r in admitted if r["audio_s"] >= 0.95 * whole_s]
    firsts = [r["first_audio_s"] for r in heard if r["first_audio_s"] is not None]
    timing = (f"{statistics.median(firsts):5.2f} {pct(firsts, 0.95):5.2f} {max(firsts):5.2f}"
              if firsts else "    -     -     -")
    return (f"{phase:11} {len(rows):5} {len(admitted):8} {len(rows) - len(admitted):7} "
            f"{len(whole):5}/{len(admitted):<3} {len(admitted) - len(heard):7}  {timing}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--phases", default="fresh,in-service")
    parser.add_argument("--max-calls", type=int, default=0, help="BRIDGE_ADMISSION_MAX_CALLS")
    parser.add_argument("--first-words-s", type=float, default=3.0,
                        help="BRIDGE_ADMISSION_FIRST_WORDS_S")
    parser.add_argument("--limit-s", type=float, default=120.0, help="bound on each call")
    parser.add_argument("--bridge-src", type=Path, default=REPO,
                        help="run the bridge of another checkout (e.g. a worktree of an older "
                             "commit, to measure before and after)")
    args = parser.parse_args()
    phases = args.phases.split(",")
    greeting = load_settings(env={}).agent.greeting  # what `make run` greets with
    env = {"BRIDGE_ADMISSION_MAX_CALLS": str(args.max_calls),
           "BRIDGE_ADMISSION_FIRST_WORDS_S": str(args.first_words_s)}
    lines = []
    with tempfile.TemporaryDirectory(prefix="burst-") as tmp:
        run_dir = Path(tmp)
        bridge = start_bridge(run_dir, None, db_dir=run_dir, tts_url="", token=TOKEN,
                              greeting=greeting, extra_env=env, src=args.bridge_src)
        try:
            bridge.wait_healthy("/health", 120)
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
                print("warming up: one call", flush=True)
                warm = await one_call(http, bridge.url, args.limit_s)
                if not warm["admitted"] or not warm["audio_s"]:
                    raise SystemExit(f"the warm-up call failed: {warm}")
                for phase in phases:
                    if phase == "in-service":
                        await in_service(http, bridge.url)
                    print(f"{phase}: {args.calls} calls at once ...", flush=True)
                    rows = await asyncio.gather(*(one_call(http, bridge.url, args.limit_s)
                                                  for _ in range(args.calls)))
                    lines.append(row(phase, rows, warm["audio_s"]))
                    errors = sorted({str(r["error"])[:120] for r in rows if r.get("error")})
                    lines.extend(f"    error: {error}" for error in errors)
        finally:
            bridge.stop()
            log_lines = (run_dir / "bridge.stderr.log").read_text(errors="replace").splitlines()
    events = [json.loads(line) for line in log_lines if line.startswith("{")]
    for name in ("call_refused", "tts_piece_failed"):
        reasons = collections.Counter(e.get("reason") for e in events if e["event"] == name)
        details = sorted({str(e.get("detail") or e.get("error"))[:150]
                          for e in events if e["event"] == name})[:3]
        print(f"{name}: {dict(reasons) or 'none'}" + "".join(f"\n    {d}" for d in details))
    print(f"greeting {warm['audio_s']:.2f} s; first-words bound {args.first_words_s:g} s")
    print(f"{'phase':11} {'calls':>5} {'admitted':>8} {'refused':>7} {'whole':>9} "
          f"{'silent':>7}  first audio s p50 / p95 / max")
    for line in lines:
        print(line)


if __name__ == "__main__":
    asyncio.run(main())
