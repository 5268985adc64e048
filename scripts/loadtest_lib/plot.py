"""The load test's PNG: TTFA percentiles, bridge overhead and underruns against concurrency."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

from loadtest_lib.stats import LevelResult

OVERHEAD_TARGET_MS = 10.0  # the target for the bridge overhead p99


def write_plot(results: Sequence[LevelResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    levels = sorted(results, key=lambda r: r.calls)
    x = [r.calls for r in levels]
    fig, (top, middle, bottom) = plt.subplots(
        3, 1, figsize=(8, 9), sharex=True, height_ratios=(3, 2, 2)
    )

    for name, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
        y = [getattr(r.ttfa_ms, name) for r in levels]
        top.plot(x, [float("nan") if v is None else v for v in y], style, label=f"TTFA {name}")
    bad = [r for r in levels if r.invalid]
    if bad:
        top.scatter(
            [r.calls for r in bad],
            [r.ttfa_ms.p99 or 0 for r in bad],
            s=160,
            marker="x",
            color="red",
            zorder=5,
            label="INVALID (see the table)",
        )
    top.set_ylabel("time to first audio (ms)")
    top.set_title("Bridge under load: say request -> first media frame at the caller")
    top.grid(alpha=0.3)
    top.legend()

    overhead = [r.overhead_ms.p99 for r in levels]
    middle.plot(
        x,
        [float("nan") if v is None else v for v in overhead],
        "o-",
        color="tab:blue",
        label="bridge overhead p99 (first TTS audio -> first frame sent)",
    )
    middle.axhline(OVERHEAD_TARGET_MS, color="tab:red", linestyle=":", label="target")
    middle.set_ylabel("ms")
    middle.set_ylim(0, 1.3 * max(OVERHEAD_TARGET_MS, *(v for v in overhead if v is not None)))
    middle.grid(alpha=0.3)
    middle.legend(loc="upper left")

    gaps = [b - a for a, b in itertools.pairwise(x)]
    width = 0.4 * min(gaps) if gaps else 0.4 * x[0]
    bottom.bar(
        x,
        [r.underruns for r in levels],
        width=width,
        color="tab:red",
        alpha=0.6,
        label="underruns (count)",
    )
    bottom.plot(
        x,
        [r.calls_with_underruns for r in levels],
        "o-",
        color="tab:purple",
        label="calls with underruns",
    )
    bottom.set_xlabel("concurrent calls")
    bottom.set_xticks(x)
    bottom.set_ylabel("underruns")
    bottom.set_ylim(0, max(1, *(r.underruns for r in levels)) * 1.1)
    bottom.grid(alpha=0.3)
    cpu = bottom.twinx()
    cpu.plot(
        x,
        [float("nan") if r.bridge_cpu_pct is None else r.bridge_cpu_pct for r in levels],
        "d--",
        color="tab:gray",
        label="bridge CPU %",
    )
    cpu.set_ylabel("bridge CPU (% of one core)")
    cpu.set_ylim(0, 110)
    handles = bottom.get_legend_handles_labels()
    more = cpu.get_legend_handles_labels()
    bottom.legend(handles[0] + more[0], handles[1] + more[1], loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
