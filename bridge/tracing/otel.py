"""OpenTelemetry spans per call and per utterance, built from the finished trace (optional).

Off unless an OTLP endpoint is configured; needs the `[otel]` extra. Spans are made after the
call from its recorded steps (monotonic clock, mapped to wall time), so tracing adds nothing to
the audio path while the call runs.
"""

from __future__ import annotations

import time

from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from bridge.tracing.trace import CallTrace

INSTALL_HINT = "pip install 'silma-bridge[otel]'"


class CallSpanExporter:
    def __init__(self, tracer: otel_trace.Tracer) -> None:
        self._tracer = tracer

    @classmethod
    def for_endpoint(cls, endpoint: str, service_name: str = "silma-bridge") -> CallSpanExporter:
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        return cls(provider.get_tracer("bridge"))

    def export(self, trace: CallTrace) -> None:
        to_wall = time.time_ns() - time.monotonic_ns()  # monotonic ns -> epoch ns
        origin = trace.origin + to_wall
        end = trace.steps.get("ended", trace.origin) + to_wall
        call = self._tracer.start_span(
            "call", start_time=origin,
            attributes={"call.id": trace.call_id, "call.provider": trace.provider,
                        "call.end_reason": trace.end_reason or "",
                        "call.barge_ins": trace.barge_ins})
        for name, at in trace.steps.items():
            call.add_event(name, timestamp=at + to_wall)
        parent = otel_trace.set_span_in_context(call)
        for utt in trace.utterances:
            steps = utt.steps
            span = self._tracer.start_span(
                "utterance", context=parent, start_time=steps["text_received"] + to_wall,
                attributes={"utterance.index": utt.index, "utterance.outcome": utt.outcome,
                            "utterance.audio_seconds": utt.audio_seconds,
                            **{f"utterance.{k}": v for k, v in utt.derived().items()
                               if v is not None}})
            for name, at in steps.items():
                span.add_event(name, timestamp=at + to_wall)
            span.end(end_time=max(steps.values()) + to_wall)
        call.end(end_time=end)
