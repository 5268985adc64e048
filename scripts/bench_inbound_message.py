#!/usr/bin/env python3
"""CPU per provider media message of what a call does first with each one, this tree vs a commit.

    .venv/bin/python scripts/bench_inbound_message.py [--baseline REV] [--rounds 5]

The work measured is `CallSession.receive`'s for a media message: the provider's parser
(Twilio's and Plivo's, JSON + base64 + checks) and the voice activity detector on its 160
bytes of line noise. The baseline's `bridge` package is exported from git (`git archive`) into
a temporary folder. Two measures, each side in its own child process:
- instructions a message (valgrind's callgrind: the count for 12,000 messages minus that for
  2,000, so start-up cancels out), which do not depend on what else the machine is doing;
- microseconds a message, best of 5 passes of 50,000, over `--rounds` rounds that alternate
  the sides, so a burst of another process's load falls on both; median and best printed.
Results: scripts/results/inbound_message.txt.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "scripts" / "results" / "inbound_message.txt"
MESSAGES = 50_000
COUNTED = (2_000, 12_000)  # messages run under callgrind: the difference is what is counted
# Run in the child: argv[1] messages, then with "time" the cost in microseconds, best of 5.
CHILD = """
import base64, random, sys, time
import orjson
from bridge.audio.vad import VoiceDetector
from bridge.telephony import plivo, twilio

random.seed(7)
noise = [bytes(random.randrange(0x70, 0x80) | random.choice((0, 0x80)) for _ in range(160))
         for _ in range(50)]
messages = []
for i, frame in enumerate(noise):
    payload = base64.b64encode(frame).decode()
    messages.append((twilio.parse_message, orjson.dumps({"event": "media",
        "sequenceNumber": str(i + 2), "streamSid": "MZ" + "0" * 32, "media": {"track": "inbound",
        "chunk": str(i + 1), "timestamp": str(20 * i), "payload": payload}}).decode()))
    messages.append((plivo.parse_message, orjson.dumps({"event": "media", "sequenceNumber": i,
        "streamId": "0" * 36, "media": {"track": "inbound", "timestamp": "1733600000000",
        "chunk": i, "payload": payload}, "extra_headers": "{}"}).decode()))
vad = VoiceDetector()
count, timed = int(sys.argv[1]), sys.argv[2:] == ["time"]
best = float("inf")
for _ in range(5 if timed else 1):
    started = time.perf_counter()
    for n in range(count):
        parse, raw = messages[n % len(messages)]
        vad.push(parse(raw).payload)
    best = min(best, time.perf_counter() - started)
if timed:
    print(best / count * 1e6)
"""


def export(rev: str, into: Path) -> None:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "bridge"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def _child(source: Path, *args: str, under: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*under, sys.executable, "-c", CHILD, *args], cwd=source, check=True,
                          capture_output=True, text=True,
                          env={"PYTHONPATH": str(source), "PATH": os.environ.get("PATH", "")})


def microseconds(source: Path) -> float:
    return float(_child(source, str(MESSAGES), "time").stdout.strip())


def instructions(source: Path) -> float:
    counts = []
    for messages in COUNTED:
        err = _child(source, str(messages), under=(
            "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null")).stderr
        found = re.search(r"Collected : (\d+)", err)
        if found is None:
            raise RuntimeError(f"no instruction count in valgrind's output: {err[-300:]}")
        counts.append(int(found[1]))
    return (counts[1] - counts[0]) / (COUNTED[1] - COUNTED[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="HEAD", help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    with tempfile.TemporaryDirectory() as folder:
        baseline = Path(folder)
        export(args.baseline, baseline)
        print("counting instructions under callgrind (a minute) ...", flush=True)
        old_ir, new_ir = instructions(baseline), instructions(REPO)
        say(f"instructions a media message (parse + VAD): {args.baseline} {old_ir:,.0f}, "
            f"this tree {new_ir:,.0f} ({old_ir / new_ir:.2f}x fewer)")
        before: list[float] = []
        after: list[float] = []
        for round_ in range(1, args.rounds + 1):
            before.append(microseconds(baseline))
            after.append(microseconds(REPO))
            say(f"round {round_}/{args.rounds}: {args.baseline} {before[-1]:.2f} us, "
                f"this tree {after[-1]:.2f} us a message")
    # The least disturbed round is the best estimate of the cost itself on a shared machine.
    for name, pick in (("median", statistics.median), ("best", min)):
        old, new = pick(before), pick(after)
        say(f"{name}: {args.baseline} {old:.2f} us, this tree {new:.2f} us a media message "
            f"({old / new:.2f}x less CPU)")
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
