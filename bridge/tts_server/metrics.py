"""GET {base}/metrics: the health figures in Prometheus text format, read at scrape time.

Taken from `TTSService.health()`: gauges of queue depth, requests in flight, and an engine's
own figures (the silma engine: real-time factor, time to first chunk, chunk counts), and the
counter of v2 requests refused before synthesis, by code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "tts_server_"


class _HealthCollector(Collector):
    def __init__(self, health: Callable[[], dict[str, Any]]) -> None:
        self._health = health

    def collect(self) -> Iterator[Metric]:
        health = self._health()
        engine = health.get("engine_stats") or {}
        numbers = {
            "ready": float(health["ready"]),
            "queued": health["queued"],
            "in_flight": health["in_flight"],
            "voices": health.get("voices", 0),
            **{f"engine_{key}": value for key, value in _flatten(engine)},
        }
        for key, value in numbers.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                yield GaugeMetricFamily(f"{PREFIX}{key}", f"health field {key}", value=value)
        refused = CounterMetricFamily(f"{PREFIX}v2_refused", "v2 requests refused before "
                                      "synthesis, by error code", labels=["code"])
        for code, count in health.get("v2_refused", {}).items():
            refused.add_metric([code], count)
        yield refused


def _flatten(values: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}_")
        else:
            yield f"{prefix}{key}", value


def render(health: Callable[[], dict[str, Any]]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_HealthCollector(health))
    return generate_latest(registry)
