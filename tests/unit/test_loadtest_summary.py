"""Several load-test runs as one table (scripts/loadtest_lib/summary.py): median and spread
per level, validity counted, results read back from their JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from loadtest_lib.stats import Dist, LevelResult
from loadtest_lib.summary import format_summary, level_from_json, spread


def test_spread_is_the_median_and_the_range() -> None:
    assert spread([3.0, 1.0, 2.0]) == "2 (1-3)"
    assert spread([1.25, 1.5], digits=1) == "1.4 (1.2-1.5)"
    assert spread([5.0, None]) == "5"
    assert spread([4.0, 4.0, 4.0]) == "4"
    assert spread([None]) == "-"


def _level(calls: int, overhead_p99: float, cpu: float, invalid: list[str] | None = None
           ) -> LevelResult:
    return LevelResult(calls=calls, duration_s=20, frames_per_wakeup=1,
                       overhead_ms=Dist(n=10, p99=overhead_p99), bridge_cpu_pct=cpu,
                       generator_cpu_pct=cpu / 2, tts_cpu_pct=5.0, invalid=invalid or [])


def test_summary_has_a_column_per_level_and_counts_valid_runs() -> None:
    runs = [
        [_level(100, 1.0, 20), _level(500, 6.0, 80)],
        [_level(100, 2.0, 22), _level(500, 9.0, 90, ["generator lateness p99 25 ms > 20 ms"])],
        [_level(100, 1.5, 21), _level(500, 7.0, 85)],
    ]
    text = format_summary(runs)
    lines = text.splitlines()
    assert lines[0].split() == ["calls", "100", "500"]
    assert lines[2].split() == ["valid", "runs", "3/3", "2/3"]
    overhead = next(line for line in lines if line.startswith("bridge overhead p99"))
    assert overhead.split()[-4:] == ["1.5", "(1.0-2.0)", "7.0", "(6.0-9.0)"]
    # (generator 10-11% + TTS 5%) / 100 calls; (40-45% + 5%) / 500 calls
    per_call = next(line for line in lines if line.startswith("generator + TTS CPU % per 100"))
    assert per_call.split()[-4:] == ["15.5", "(15.0-16.0)", "9.5", "(9.0-10.0)"]
    assert "500 calls INVALID in a run: generator lateness" in text
    assert "over 3 runs, valid or not" in text
    valid = format_summary(runs, valid_only=True).splitlines()
    overhead = next(line for line in valid if line.startswith("bridge overhead p99"))
    assert overhead.split()[-2:] == ["6.5", "(6.0-7.0)"]  # the invalid run's 9.0 left out
    assert valid[2].split()[-1] == "2/3"


def test_levels_come_back_from_their_json() -> None:
    level = _level(300, 2.5, 60)
    back = level_from_json(json.loads(json.dumps(level.to_json())))
    assert back == level
