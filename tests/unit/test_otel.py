from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bridge.tracing.otel import CallSpanExporter
from bridge.tracing.trace import CallTrace


def test_call_and_utterance_spans_from_a_finished_trace():
    now = [1_000_000_000]
    clock = lambda: now[0]  # noqa: E731
    trace = CallTrace("CA1", "twilio", clock)
    trace.step("start_received")
    utt = trace.utterance("Hello there.")
    for step in ("request_sent", "first_audio", "first_frame_sent", "last_frame_sent",
                 "playout_finished"):
        now[0] += 50_000_000
        utt.step(step)
    utt.finish("played")
    now[0] += 10_000_000
    trace.end("stop")

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    CallSpanExporter(provider.get_tracer("test")).export(trace)

    spans = {s.name: s for s in memory.get_finished_spans()}
    call, utterance = spans["call"], spans["utterance"]
    # A finished span has all of these; the SDK types them optional for spans in progress.
    assert utterance.parent is not None and call.context is not None
    assert call.attributes is not None and utterance.attributes is not None
    assert call.start_time is not None and call.end_time is not None
    assert utterance.start_time is not None and utterance.end_time is not None
    assert utterance.parent.span_id == call.context.span_id
    assert call.attributes["call.id"] == "CA1"
    assert utterance.attributes["utterance.outcome"] == "played"
    assert utterance.attributes["utterance.tts_first_byte_ms"] == 50.0
    assert [e.name for e in utterance.events][-1] == "playout_finished"
    assert (call.end_time - call.start_time) == 260_000_000
    assert (utterance.end_time - utterance.start_time) == 250_000_000
