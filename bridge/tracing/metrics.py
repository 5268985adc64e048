"""Prometheus metrics, fed from finished traces (never per frame) and read from the pools at scrape.

Each bridge app owns its registry, so several apps in one process (tests) never collide.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from bridge.tracing.trace import CallTrace, UtteranceTrace

RECENT_UTTERANCES = 500
_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0,
                      3.0, 5.0, 10.0)
_OVERHEAD_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)
# Utterance metric -> the trace's derived duration it observes.
_UTTERANCE_HISTOGRAMS = {
    "time_to_first_audio": "time_to_first_audio_ms",
    "tts_first_byte": "tts_first_byte_ms",
    "synthesis": "synthesis_ms",
    "pool_acquire_wait": "pool_wait_ms",
}


class _PoolCollector(Collector):
    """Pool gauges read at scrape time, one series per endpoint."""

    def __init__(self, pool_stats: Callable[[], list[dict[str, Any]]]) -> None:
        self._pool_stats = pool_stats

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        gauges = {
            name: GaugeMetricFamily(f"bridge_pool_{name}", help_, labels=["endpoint"])
            for name, help_ in (("ready", "Warm connections ready to hand out"),
                                ("in_use", "Connections carrying a request"),
                                ("connecting", "Connections being opened"),
                                ("ready_ratio", "Ready connections over the warm target"))
        }
        pools = self._pool_stats()
        for stats in pools:
            for name, family in gauges.items():
                family.add_metric([stats["endpoint"]], float(stats[name]))
        yield from gauges.values()
        yield from _tts_safety(pools)


# What untrusted TTS servers sent that was refused, and the pools' own supervision: pool stat
# -> (metric, help). Summed per endpoint (pools with different keys share one endpoint).
_TTS_COUNTERS = {
    "malformed_replies": ("bridge_tts_malformed_replies",
                          "TTS replies refused as breaking the protocol"),
    "oversize_replies": ("bridge_tts_oversize_replies",
                         "TTS replies refused as over a size bound"),
    "unrouted_replies": ("bridge_tts_unrouted_replies",
                         "TTS replies for no request in flight (dropped)"),
    "reader_failures": ("bridge_tts_reader_failures",
                        "Unexpected failures contained in a TTS connection's reader"),
    "maintainer_failures": ("bridge_pool_maintainer_failures",
                            "Failures of a pool's maintainer loop (logged, restarted)"),
    "health_failures": ("bridge_pool_health_failures", "Health checks that were not ok"),
}


def _tts_safety(pools: list[dict[str, Any]]) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
    totals: dict[str, dict[str, float]] = collections.defaultdict(
        lambda: dict.fromkeys(_TTS_COUNTERS, 0.0))
    running: dict[str, float] = {}
    for stats in pools:
        endpoint = stats["endpoint"]
        for name in _TTS_COUNTERS:
            totals[endpoint][name] += float(stats.get(name, 0))
        # 1 when every pool on the endpoint has its maintainer running: alert on 0.
        running[endpoint] = min(running.get(endpoint, 1.0),
                                float(bool(stats.get("maintainer_running", True))))
    for name, (metric, help_) in _TTS_COUNTERS.items():
        counter = CounterMetricFamily(metric, help_, labels=["endpoint"])
        for endpoint, values in totals.items():
            counter.add_metric([endpoint], values[name])
        yield counter
    gauge = GaugeMetricFamily("bridge_pool_maintainer_running",
                              "1 when every pool's maintainer task is running", labels=["endpoint"])
    for endpoint, value in running.items():
        gauge.add_metric([endpoint], value)
    yield gauge


class BridgeMetrics:
    def __init__(self, pool_stats: Callable[[], list[dict[str, Any]]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.histograms = {
            name: Histogram(f"bridge_{name}_seconds", f"Per utterance: {field}", registry=r,
                            buckets=_LATENCY_BUCKETS_S)
            for name, field in _UTTERANCE_HISTOGRAMS.items()
        }
        self.bridge_overhead = Histogram(
            "bridge_overhead_seconds", "First TTS audio to first frame sent", registry=r,
            buckets=_OVERHEAD_BUCKETS_S)
        self.live_calls = Gauge("bridge_live_calls", "Calls in progress", registry=r)
        self.calls = Counter("bridge_calls", "Calls ended", ["provider", "reason"], registry=r)
        self.utterances = Counter("bridge_utterances", "Utterances ended", ["outcome"],
                                  registry=r)
        self.errors = Counter("bridge_errors", "Errors by kind", ["kind"], registry=r)
        self.fallbacks = Counter("bridge_tts_fallbacks", "Requests sent over HTTP fallback",
                                 registry=r)
        self.barge_ins = Counter("bridge_barge_ins", "Caller spoke over the agent", registry=r)
        self.underruns = Counter("bridge_underruns",
                                 "Times the caller's buffer ran dry mid-utterance", registry=r)
        self.malformed = Counter("bridge_malformed_provider_messages",
                                 "Provider messages that could not be parsed", ["provider"],
                                 registry=r)
        self.refused = Counter("bridge_refused_inputs",
                               "Inputs refused by a check or past a bound, by kind", ["kind"],
                               registry=r)
        self.tts_retries = Counter("bridge_tts_retries",
                                   "TTS requests tried again, by why the attempt failed",
                                   ["reason"], registry=r)
        self.playback_failed = Counter(
            "bridge_playback_failed",
            "Utterance pieces given up after retries (the agent is told), by reason",
            ["reason"], registry=r)
        self.calls_refused = Counter("bridge_calls_refused",
                                     "New calls answered busy at the webhook, by reason",
                                     ["provider", "reason"], registry=r)
        r.register(_PoolCollector(pool_stats))
        # Recent utterances for the monitoring targets: (failed, synthesis seconds or None).
        self.recent: collections.deque[tuple[bool, float | None]] = collections.deque(
            maxlen=RECENT_UTTERANCES)

    def utterance_done(self, utt: UtteranceTrace) -> None:
        derived = utt.derived()
        for name, field in _UTTERANCE_HISTOGRAMS.items():
            if (value := derived[field]) is not None:
                self.histograms[name].observe(value / 1000)
        if (overhead := derived["bridge_overhead_ms"]) is not None:
            self.bridge_overhead.observe(overhead / 1000)
        self.utterances.labels(utt.outcome).inc()
        synthesis = derived["synthesis_ms"]
        self.recent.append((utt.outcome == "failed",
                            None if synthesis is None else synthesis / 1000))
        if utt.outcome == "failed":
            self.errors.labels("tts").inc()
        if utt.fallback:
            self.fallbacks.inc()
        if utt.underruns:
            self.underruns.inc(utt.underruns)
        for reason, count in utt.retries.items():
            self.tts_retries.labels(reason).inc(count)
        for reason, _ in utt.lost:
            self.playback_failed.labels(reason).inc()

    def refuse(self, kind: str) -> None:
        """Count one refused input; `kind` is one of a fixed set of names (a label value)."""
        self.refused.labels(kind).inc()

    def call_started(self) -> None:
        self.live_calls.inc()

    def call_ended(self, trace: CallTrace) -> None:
        self.live_calls.dec()
        self.calls.labels(trace.provider, trace.end_reason or "unknown").inc()
        if trace.barge_ins:
            self.barge_ins.inc(trace.barge_ins)
        if trace.malformed_messages:
            self.malformed.labels(trace.provider).inc(trace.malformed_messages)
            self.errors.labels("malformed_provider_message").inc(trace.malformed_messages)

    def recent_error_rate(self) -> float | None:
        return (sum(failed for failed, _ in self.recent) / len(self.recent)
                if self.recent else None)

    def recent_synthesis_p95_s(self) -> float | None:
        values = sorted(s for _, s in self.recent if s is not None)
        return values[min(len(values) - 1, int(0.95 * len(values)))] if values else None

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
