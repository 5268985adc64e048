"""The load test's pure parts: percentiles, per-level results, the validity rule, the table,
and parsers for what it samples (Prometheus text, /proc/net/tcp, the bridge's log).

No I/O, no clock: everything takes its input as arguments, so tests/unit can check it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# A level is INVALID when the generator, not the bridge, fell behind.
MAX_GENERATOR_LAG_P99_MS = 20.0
MAX_GENERATOR_CORE_PCT = 90.0  # of the cores the generator (and the TTS server) share
# Other processes on the machine (a test suite, a browser) take the pinned cores' time: the
# bridge then waits, runnable, for its core, and its numbers are the machine's, not its own.
MAX_BRIDGE_WAIT_PCT = 10.0
MAX_OTHER_CPU_PCT = 25.0  # warn before starting when the machine is this busy already


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation between order statistics, or None
    for no values (numpy's default method, without numpy)."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not within 0-100")
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class Dist:
    """A distribution summarized: count, p50/p95/p99 and max (None when empty)."""

    n: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: Sequence[float]) -> Dist:
        return cls(
            n=len(values),
            p50=percentile(values, 50),
            p95=percentile(values, 95),
            p99=percentile(values, 99),
            max=max(values) if values else None,
        )


@dataclass
class LevelResult:
    """One concurrency level's outcome. Times in ms, CPU in % of one core, memory in MiB."""

    calls: int
    duration_s: float
    frames_per_wakeup: int
    calls_up: int = 0  # media streams that opened
    calls_failed: int = 0  # setup failed, or the call broke / timed out before the level ended
    utterances: int = 0  # replies asked for in the steady window
    utterances_played: int = 0  # of them, played out (mark settled)
    ttfa_ms: Dist = field(default_factory=Dist)  # say request -> first media frame (caller)
    greeting_ttfa_ms: Dist = field(default_factory=Dist)  # stream start -> first greeting frame
    overhead_ms: Dist = field(default_factory=Dist)  # bridge: first TTS audio -> first frame
    bridge_ttfa_ms: Dist = field(default_factory=Dist)  # bridge: text received -> first frame
    echo_lag_ms: Dist = field(default_factory=Dist)  # bridge: mark echo read - expected playout
    underruns: int = 0
    underrun_s: float = 0.0
    calls_with_underruns: int = 0
    bridge_underruns: int = 0  # the bridge's own count (its sender fell behind), /metrics delta
    backlog_ms: Dist = field(default_factory=Dist)  # bridge's unread inbound, per socket-second
    protocol_violations: int = 0
    say_errors: int = 0  # POST /say not answered 202
    clears: int = 0  # clears the bridge sent (barge-in on caller audio)
    bridge_errors: int = 0  # /metrics bridge_errors_total delta
    tts_retries: int = 0  # /metrics bridge_tts_retries_total delta: pieces tried again
    pieces_lost: int = 0  # /metrics bridge_playback_failed_total delta: given up, not heard
    tts_killed_at_s: float | None = None  # into the steady window, when one TTS was killed
    ttfa_after_kill_ms: Dist = field(default_factory=Dist)  # replies asked in the 5 s after
    log_errors: int = 0  # error/critical lines and tracebacks in the bridge's stderr
    bridge_cpu_pct: float | None = None
    bridge_rss_mib: float | None = None
    tts_cpu_pct: float | None = None
    generator_cpu_pct: float | None = None
    other_cpu_pct: float | None = None  # everything else on the machine meanwhile
    bridge_wait_pct: float | None = None  # runnable but waiting for its core (% of time)
    generator_wait_pct: float | None = None  # the same for the generator (TTS server, others)
    generator_lag_ms: Dist = field(default_factory=Dist)  # loop-lag probe, steady window
    clock_late_mean_ms: float | None = None  # the caller-media clock's ticks vs schedule
    clock_late_max_ms: float | None = None
    examples: list[str] = field(default_factory=list)  # first distinct errors/violations
    invalid: list[str] = field(default_factory=list)  # why the generator's numbers don't count

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "valid": not self.invalid}


def invalid_reasons(
    lag_p99_ms: float | None,
    generator_cpu_pct: float | None,
    shared_cpu_pct: float | None,
    shared_cores: int,
    bridge_wait_pct: float | None = None,
) -> list[str]:
    """Why a level's numbers say more about the generator or the machine than the bridge;
    [] when they are valid.

    `lag_p99_ms`: the generator's event-loop lag p99 (what delays every media send);
    `shared_cpu_pct`: CPU of whatever else runs on the generator's cores (the TTS server);
    `bridge_wait_pct`: share of the time the bridge was runnable but another process had
    its core (the kernel's run-queue wait).
    """
    reasons = []
    if lag_p99_ms is not None and lag_p99_ms > MAX_GENERATOR_LAG_P99_MS:
        reasons.append(
            f"generator lateness p99 {lag_p99_ms:.1f} ms > {MAX_GENERATOR_LAG_P99_MS:.0f} ms"
        )
    if generator_cpu_pct is not None:
        used = generator_cpu_pct + (shared_cpu_pct or 0.0)
        limit = MAX_GENERATOR_CORE_PCT * max(1, shared_cores)
        if used > limit:
            reasons.append(
                f"generator core(s) saturated: generator {generator_cpu_pct:.0f}% + TTS "
                f"{shared_cpu_pct or 0:.0f}% > {limit:.0f}%"
            )
    if bridge_wait_pct is not None and bridge_wait_pct > MAX_BRIDGE_WAIT_PCT:
        reasons.append(
            f"the bridge waited {bridge_wait_pct:.0f}% of the time for its core "
            f"(> {MAX_BRIDGE_WAIT_PCT:.0f}%): other processes were using it"
        )
    return reasons


# --- the table ------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _trio(d: Dist, digits: int = 0) -> str:
    return f"{_num(d.p50, digits)} / {_num(d.p95, digits)} / {_num(d.p99, digits)}"


def _pair(d: Dist, digits: int = 0) -> str:
    return f"{_num(d.p50, digits)} / {_num(d.p99, digits)}"


_ROWS: list[tuple[str, Callable[[LevelResult], str]]] = [
    ("valid", lambda r: "yes" if not r.invalid else "INVALID"),
    ("calls up / failed", lambda r: f"{r.calls_up} / {r.calls_failed}"),
    ("replies asked / played", lambda r: f"{r.utterances} / {r.utterances_played}"),
    ("TTFA p50/p95/p99 ms", lambda r: _trio(r.ttfa_ms)),
    ("greeting TTFA p50/p95/p99 ms", lambda r: _trio(r.greeting_ttfa_ms)),
    ("bridge TTFA p50/p99 ms", lambda r: _pair(r.bridge_ttfa_ms)),
    ("bridge overhead p50/p99 ms", lambda r: _pair(r.overhead_ms, 1)),
    (
        "underruns n / s / calls",
        lambda r: f"{r.underruns} / {r.underrun_s:.2f} / {r.calls_with_underruns}",
    ),
    ("bridge-side underruns", lambda r: str(r.bridge_underruns)),
    (
        "inbound backlog p99/max ms",
        lambda r: f"{_num(r.backlog_ms.p99)} / {_num(r.backlog_ms.max)}",
    ),
    ("mark echo lag p50/p99 ms", lambda r: _pair(r.echo_lag_ms)),
    (
        "errors fail/viol/say/bridge/log",
        lambda r: (
            f"{r.calls_failed}/{r.protocol_violations}/{r.say_errors}/{r.bridge_errors}/"
            f"{r.log_errors}"
        ),
    ),
    ("clears (barge-in)", lambda r: str(r.clears)),
    ("TTS retries / pieces lost", lambda r: f"{r.tts_retries} / {r.pieces_lost}"),
    (
        "TTFA 5 s after TTS kill p50/p95/max",
        lambda r: (
            "-" if r.tts_killed_at_s is None
            else f"{_num(r.ttfa_after_kill_ms.p50)}/{_num(r.ttfa_after_kill_ms.p95)}/"
            f"{_num(r.ttfa_after_kill_ms.max)} (kill at +{r.tts_killed_at_s:.0f} s)"
        ),
    ),
    ("bridge CPU % / RSS MiB", lambda r: f"{_num(r.bridge_cpu_pct)} / {_num(r.bridge_rss_mib)}"),
    (
        "generator CPU % / TTS CPU %",
        lambda r: f"{_num(r.generator_cpu_pct)} / {_num(r.tts_cpu_pct)}",
    ),
    (
        "other load % / bridge, gen wait %",
        lambda r: (
            f"{_num(r.other_cpu_pct)} / {_num(r.bridge_wait_pct)}, {_num(r.generator_wait_pct)}"
        ),
    ),
    ("generator lag p50/p99 ms", lambda r: _pair(r.generator_lag_ms, 1)),
    (
        "media clock late mean / max ms",
        lambda r: f"{_num(r.clock_late_mean_ms, 1)} / {_num(r.clock_late_max_ms, 1)}",
    ),
]


def format_table(results: Sequence[LevelResult]) -> str:
    """Metrics down, levels across (a level per column reads better than 17 columns), then
    the reasons of INVALID levels."""
    header = ["calls"] + [str(r.calls) for r in results]
    rows = [header] + [[label] + [cell(r) for r in results] for label, cell in _ROWS]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if n == 0:
            lines.append("-" * len(lines[0]))
    for r in results:
        lines += [f"{r.calls} calls INVALID: {why}" for why in r.invalid]
    return "\n".join(lines)


def saturation_level(results: Sequence[LevelResult], cpu_pct: float = 90.0) -> int | None:
    """The lowest valid level at which the bridge's core was (nearly) full, if any."""
    for r in sorted(results, key=lambda r: r.calls):
        if not r.invalid and r.bridge_cpu_pct is not None and r.bridge_cpu_pct >= cpu_pct:
            return r.calls
    return None


# --- parsers ----------------------------------------------------------------------------------


def prometheus_totals(text: str) -> dict[str, float]:
    """Sum of each sample name over its label sets, from Prometheus text exposition."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0].strip()
        try:
            totals[name] = totals.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return totals


def tcp_receive_queues(proc_net_tcp: str, local_port: int) -> list[int]:
    """Unread bytes (rx_queue) of each established IPv4 socket on `local_port`, from the text
    of /proc/net/tcp: what the process listening there has not read yet."""
    queues = []
    for line in proc_net_tcp.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 5 or cols[3] != "01":  # 01: ESTABLISHED
            continue
        port = int(cols[1].rsplit(":", 1)[1], 16)
        if port == local_port:
            queues.append(int(cols[4].split(":")[1], 16))
    return queues


_CHAINED = ("Traceback", "During handling", "The above exception")


def scan_log(lines: Iterable[str]) -> tuple[int, list[str]]:
    """Error-level JSON lines and tracebacks in a bridge log: their count, and the first few
    distinct ones (a traceback by its final "SomeError: message" line)."""
    count = 0
    seen: list[str] = []

    def note(text: str) -> None:
        if len(seen) < 5 and text[:160] not in seen:
            seen.append(text[:160])

    in_traceback = False
    for line in lines:
        text = line.rstrip()
        if in_traceback:
            # The exception line ends a traceback; a chained one goes on to the last.
            if text and not text[0].isspace() and not text.startswith(_CHAINED):
                note(text)
                in_traceback = False
            continue
        if text.startswith("Traceback"):
            count += 1
            in_traceback = True
        elif text.startswith("{"):
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and str(record.get("level", "")).lower() in (
                "error",
                "critical",
                "exception",
            ):
                count += 1
                note(f"{record.get('event', '')} {record.get('error', '')}".strip())
    return count, seen
