"""The product specification's monitoring targets, judged against live values."""

from __future__ import annotations

from typing import Any

from bridge.tracing.metrics import BridgeMetrics

READY_RATIO_MIN = 0.8
SYNTHESIS_MAX_S = 5.0
ERROR_RATE_MAX = 0.01
RENEWAL_SLACK_S = 60.0  # a connection may outlive max_age by one maintenance pass


def _target(name: str, target: str, value: float | None, ok: bool | None) -> dict[str, Any]:
    return {"name": name, "target": target,
            "value": None if value is None else round(value, 4), "ok": ok}


def monitoring_targets(metrics: BridgeMetrics, pools: list[dict[str, Any]],
                       max_age_s: float) -> list[dict[str, Any]]:
    ratio = min((p["ready_ratio"] for p in pools), default=None)
    oldest = max((c["age_s"] for p in pools for c in p["connections"]
                  if c["state"] == "ready"), default=None)
    synthesis = metrics.recent_synthesis_p95_s()
    errors = metrics.recent_error_rate()
    return [
        _target("pool_ready_ratio", f"> {READY_RATIO_MIN:.0%}", ratio,
                None if ratio is None else ratio >= READY_RATIO_MIN),
        _target("synthesis_latency_p95_s", f"< {SYNTHESIS_MAX_S:g} s", synthesis,
                None if synthesis is None else synthesis < SYNTHESIS_MAX_S),
        _target("oldest_connection_age_s", f"recreated every {max_age_s / 60:g} min", oldest,
                None if oldest is None else oldest <= max_age_s + RENEWAL_SLACK_S),
        _target("error_rate", f"< {ERROR_RATE_MAX:.0%}", errors,
                None if errors is None else errors < ERROR_RATE_MAX),
    ]
