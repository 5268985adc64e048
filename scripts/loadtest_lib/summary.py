"""Several runs of the same load test as one table: per level, the median and the spread
(min-max) of each figure over the runs, and how many runs were valid. What the README
reports: one run on a shared 2-core machine is a sample, not a result.

    .venv/bin/python scripts/loadtest.py ... --json run1.json   (three times)
    .venv/bin/python scripts/loadtest.py --summarize run1.json run2.json run3.json

Pure: results in, text out.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from loadtest_lib.stats import Dist, LevelResult


def level_from_json(data: dict[str, Any]) -> LevelResult:
    """A LevelResult back from `LevelResult.to_json()` (its Dist fields as dicts)."""
    fields = {k: v for k, v in data.items() if k in LevelResult.__dataclass_fields__}
    for name, value in fields.items():
        if isinstance(value, dict) and set(value) <= set(Dist.__dataclass_fields__):
            fields[name] = Dist(**value)
    return LevelResult(**fields)


def spread(values: Sequence[float | None], digits: int = 0) -> str:
    """'median (min-max)' of the known values; one value alone; '-' for none."""
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    fmt = f"{{:,.{digits}f}}"
    median = fmt.format(statistics.median(known))
    if len(known) == 1 or min(known) == max(known):
        return median
    return f"{median} ({fmt.format(min(known))}-{fmt.format(max(known))})"


def _per_call(r: LevelResult) -> float | None:
    """Generator plus TTS CPU per 100 calls, % of one core: what the generator's core pays."""
    if r.generator_cpu_pct is None or not r.calls:
        return None
    return 100 * (r.generator_cpu_pct + (r.tts_cpu_pct or 0.0)) / r.calls


_ROWS: list[tuple[str, Callable[[LevelResult], float | None], int]] = [
    ("underruns (caller side)", lambda r: float(r.underruns), 0),
    ("bridge-side underruns", lambda r: float(r.bridge_underruns), 0),
    ("bridge overhead p99 ms", lambda r: r.overhead_ms.p99, 1),
    ("TTFA p50 ms", lambda r: r.ttfa_ms.p50, 0),
    ("TTFA p99 ms", lambda r: r.ttfa_ms.p99, 0),
    ("bridge CPU %", lambda r: r.bridge_cpu_pct, 0),
    ("generator CPU %", lambda r: r.generator_cpu_pct, 0),
    ("TTS CPU %", lambda r: r.tts_cpu_pct, 0),
    ("generator + TTS CPU % per 100 calls", _per_call, 1),
    ("generator lag p99 ms", lambda r: r.generator_lag_ms.p99, 1),
    ("bridge RSS MiB", lambda r: r.bridge_rss_mib, 0),
    ("errors (fail+viol+say+bridge+log)", lambda r: float(
        r.calls_failed + r.protocol_violations + r.say_errors + r.bridge_errors + r.log_errors), 0),
]


def format_summary(runs: Sequence[Sequence[LevelResult]], *, valid_only: bool = False) -> str:
    """Levels across (those of any run, by call count), figures down: 'median (min-max)' over
    the runs that had the level, valid ones or not (the validity row says how many were); with
    `valid_only`, over the valid ones alone (an invalid level measured something else)."""
    levels = sorted({r.calls for run in runs for r in run})
    by_level = {n: [r for run in runs for r in run if r.calls == n] for n in levels}
    header = ["calls", *(str(n) for n in levels)]
    rows = [header, ["valid runs", *(
        f"{sum(not r.invalid for r in by_level[n])}/{len(by_level[n])}" for n in levels)]]
    counted = {n: [r for r in by_level[n] if not (valid_only and r.invalid)] for n in levels}
    for label, value, digits in _ROWS:
        rows.append([label, *(spread([value(r) for r in counted[n]], digits) for n in levels)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"median (min-max) over {len(runs)} runs" + (", the valid ones" if valid_only
                                                              else ", valid or not"))
    for n in levels:
        for r in by_level[n]:
            lines += [f"{n} calls INVALID in a run: {why}" for why in r.invalid]
    return "\n".join(lines)
