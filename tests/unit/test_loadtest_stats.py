"""The load test's pure parts (scripts/loadtest_lib/stats.py): no processes, no sockets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

# scripts/ is not a package: its modules import each other as top-level ones.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from loadtest_lib.stats import (
    MAX_GENERATOR_LAG_P99_MS,
    Dist,
    LevelResult,
    format_table,
    invalid_reasons,
    percentile,
    prometheus_totals,
    saturation_level,
    scan_log,
    tcp_receive_queues,
)


def test_percentile_interpolates_between_order_statistics() -> None:
    values = [40.0, 10.0, 30.0, 20.0]  # unsorted on purpose
    assert percentile(values, 0) == 10.0
    assert percentile(values, 100) == 40.0
    assert percentile(values, 50) == pytest.approx(25.0)
    assert percentile(values, 99) == pytest.approx(39.7)
    assert percentile([7.0], 99) == 7.0


def test_percentile_of_nothing_is_none_and_range_is_checked() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_dist_summarizes_and_empty_dist_has_no_numbers() -> None:
    d = Dist.of([float(v) for v in range(1, 101)])
    assert (d.n, d.max) == (100, 100.0)
    assert d.p50 == pytest.approx(50.5)
    assert d.p95 == pytest.approx(95.05)
    assert d.p99 == pytest.approx(99.01)
    assert Dist.of([]) == Dist(n=0)


def test_valid_when_generator_kept_up() -> None:
    assert invalid_reasons(3.0, 40.0, 10.0, shared_cores=1, bridge_wait_pct=2.0) == []
    assert invalid_reasons(None, None, None, shared_cores=1) == []


def test_invalid_when_generator_lateness_p99_over_limit() -> None:
    (reason,) = invalid_reasons(MAX_GENERATOR_LAG_P99_MS + 5, 40.0, 0.0, shared_cores=1)
    assert "lateness p99 25.0 ms > 20 ms" in reason
    assert invalid_reasons(MAX_GENERATOR_LAG_P99_MS, 40.0, 0.0, shared_cores=1) == []


def test_invalid_when_generator_core_saturated_counting_the_tts_server_beside_it() -> None:
    (reason,) = invalid_reasons(1.0, 80.0, 15.0, shared_cores=1)
    assert "saturated" in reason and "80%" in reason and "15%" in reason
    # Two cores for the generator and the TTS server: twice the room.
    assert invalid_reasons(1.0, 80.0, 15.0, shared_cores=2) == []


def test_invalid_when_the_bridge_waited_for_its_core() -> None:
    (reason,) = invalid_reasons(1.0, 10.0, 1.0, shared_cores=1, bridge_wait_pct=35.0)
    assert "bridge waited 35% of the time" in reason
    assert invalid_reasons(1.0, 10.0, 1.0, shared_cores=1, bridge_wait_pct=10.0) == []


def test_reasons_accumulate() -> None:
    assert len(invalid_reasons(50.0, 99.0, 5.0, shared_cores=1, bridge_wait_pct=80.0)) == 3


def _level(calls: int, **kw: object) -> LevelResult:
    r = LevelResult(calls=calls, duration_s=20.0, frames_per_wakeup=5, calls_up=calls)
    for key, value in kw.items():
        setattr(r, key, value)
    return r


def test_table_has_a_column_per_level_and_explains_invalid_levels() -> None:
    ok = _level(
        25,
        ttfa_ms=Dist(n=3, p50=160.4, p95=181.0, p99=190.6, max=191.0),
        underruns=2,
        underrun_s=0.125,
        calls_with_underruns=1,
        bridge_cpu_pct=12.3,
        bridge_rss_mib=110.0,
    )
    bad = _level(500, invalid=["generator lateness p99 31.0 ms > 20 ms"], bridge_cpu_pct=99.0)
    lines = format_table([ok, bad]).splitlines()
    assert lines[0].split() == ["calls", "25", "500"]
    assert set(lines[1]) == {"-"}
    assert lines[2].split() == ["valid", "yes", "INVALID"]
    ttfa = next(line for line in lines if line.startswith("TTFA p50/p95/p99 ms"))
    assert "160 / 181 / 191" in ttfa and "- / - / -" in ttfa
    underruns = next(line for line in lines if line.startswith("underruns"))
    assert "2 / 0.12 / 1" in underruns
    assert lines[-1] == "500 calls INVALID: generator lateness p99 31.0 ms > 20 ms"
    # Every line but the reasons lines up: the right edge of a column is the same everywhere.
    table = [line for line in lines if "INVALID:" not in line and set(line) != {"-"}]
    assert len({len(line) for line in table}) == 1


def test_level_result_to_json_is_plain_data_with_validity() -> None:
    data = _level(100, invalid=["x"]).to_json()
    assert data["valid"] is False
    assert data["ttfa_ms"] == {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    json.dumps(data)  # serializable as is


def test_saturation_level_is_the_lowest_valid_level_with_a_full_core() -> None:
    results = [
        _level(300, bridge_cpu_pct=97.0),
        _level(100, bridge_cpu_pct=45.0),
        _level(200, bridge_cpu_pct=95.0, invalid=["generator behind"]),
    ]
    assert saturation_level(results) == 300
    assert saturation_level(results[1:]) is None


def test_prometheus_totals_sum_label_sets_and_skip_comments() -> None:
    text = (
        "# HELP bridge_errors_total Errors by kind\n"
        "# TYPE bridge_errors_total counter\n"
        'bridge_errors_total{kind="tts"} 3.0\n'
        'bridge_errors_total{kind="send"} 2.0\n'
        "bridge_underruns_total 7.0\n"
        'bridge_overhead_seconds_bucket{le="0.001"} 12.0\n'
    )
    totals = prometheus_totals(text)
    assert totals["bridge_errors_total"] == 5.0
    assert totals["bridge_underruns_total"] == 7.0
    assert "bridge_overhead_seconds_bucket" in totals


def test_tcp_receive_queues_of_established_sockets_on_the_port() -> None:
    # Port 8080 = 0x1F90; 01 ESTABLISHED, 0A LISTEN.
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0\n"
        "   1: 0100007F:1F90 0100007F:C350 01 00000000:00000400 00:00000000 00000000     0\n"
        "   2: 0100007F:1F90 0100007F:C351 01 00000000:00000000 00:00000000 00000000     0\n"
        "   3: 0100007F:C350 0100007F:1F90 01 00000010:00000020 00:00000000 00000000     0\n"
    )
    assert tcp_receive_queues(text, 8080) == [1024, 0]
    assert tcp_receive_queues(text, 9000) == []


def test_scan_log_counts_error_lines_and_tracebacks_once_each() -> None:
    lines = [
        json.dumps({"event": "secret_key_from_file", "level": "warning"}),
        json.dumps({"event": "call_failed", "level": "error", "error": "boom"}),
        "Error handling request",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "KeyError: 'a'",
        "",
        "During handling of the above exception, another exception occurred:",
        "",
        "Traceback (most recent call last):",
        '  File "y.py", line 2, in f',
        "ValueError: bad",
        "{not json",
    ]
    count, examples = scan_log(lines)
    assert count == 3  # the error line and two tracebacks
    assert examples == ["call_failed boom", "KeyError: 'a'", "ValueError: bad"]
