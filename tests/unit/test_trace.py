import pytest

from bridge.tracing.trace import CallTrace


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000_000

    def __call__(self) -> int:
        return self.now

    def advance_ms(self, ms: float) -> None:
        self.now += int(ms * 1e6)


@pytest.fixture
def clock():
    return FakeClock()


def test_derived_durations_of_a_played_utterance(clock):
    call = CallTrace("CA1", "twilio", clock)
    call.step("start_received")
    utt = call.utterance("Hello there.")
    for step, after_ms in [("text_split", 1), ("pool_wait_done", 2), ("request_sent", 0),
                           ("first_audio", 150), ("first_frame_sent", 3),
                           ("synthesis_complete", 100), ("last_frame_sent", 900),
                           ("playout_finished", 200)]:
        clock.advance_ms(after_ms)
        utt.step(step)
    utt.finish("played")
    d = utt.derived()
    assert d["time_to_first_audio_ms"] == 156
    assert d["tts_first_byte_ms"] == 150
    assert d["bridge_overhead_ms"] == 3
    assert d["pool_wait_ms"] == 2
    assert d["playout_lag_ms"] == 200
    assert d["total_ms"] == 1356
    assert utt.outcome == "played"


def test_repeated_step_keeps_first_time(clock):
    utt = CallTrace("CA1", "twilio", clock).utterance("x")
    utt.step("first_audio")
    clock.advance_ms(50)
    utt.step("first_audio")
    assert utt.derived()["tts_first_byte_ms"] is None  # request_sent never happened
    assert utt.at("first_audio") == 1_000_000_000


def test_unknown_step_is_a_bug(clock):
    with pytest.raises(ValueError):
        CallTrace("CA1", "twilio", clock).utterance("x").step("nonsense")


def test_barge_in_and_missing_echo(clock):
    call = CallTrace("CA1", "twilio", clock)
    first = call.utterance("one")
    first.step("first_frame_sent")
    clock.advance_ms(300)
    first.step("interrupted")
    first.finish("interrupted")
    second = call.utterance("two")
    second.step("last_frame_sent")  # echo never comes
    clock.advance_ms(10)
    call.end("stop")
    assert first.outcome == "interrupted"
    assert second.outcome == "abandoned"
    assert second.derived()["playout_lag_ms"] is None
    summary = call.summary()
    assert summary["interrupted"] == 1
    assert summary["utterances"] == 2
    assert summary["end_reason"] == "stop"


def test_to_dict_steps_are_relative_to_call_origin(clock):
    call = CallTrace("CA1", "twilio", clock)
    call.step("webhook_answered")
    clock.advance_ms(500)
    call.step("start_received")
    utt = call.utterance("hi")
    clock.advance_ms(100)
    utt.step("first_frame_sent")
    out = call.to_dict()
    assert out["steps_ms"]["start_received"] == 500
    assert out["webhook_to_start_ms"] == 500
    assert out["utterance_traces"][0]["steps_ms"]["first_frame_sent"] == 600
    assert out["first_ttfa_ms"] == 100


def test_dtmf_kept_is_bounded_and_the_rest_counted() -> None:
    from bridge.tracing.trace import MAX_DTMF

    trace = CallTrace("CA1", "twilio", clock=lambda: 0)
    for _ in range(MAX_DTMF + 10):
        trace.add_dtmf("5")
    assert len(trace.dtmf) == MAX_DTMF
    assert trace.to_dict()["dtmf_dropped"] == 10


def test_utterance_traces_kept_are_bounded_and_counts_stay_whole() -> None:
    from bridge.tracing.trace import MAX_UTTERANCES

    trace = CallTrace("CA1", "twilio", clock=lambda: 0)
    for i in range(MAX_UTTERANCES + 50):
        utt = trace.utterance(f"line {i}")
        utt.underruns = 1
        utt.finish("failed" if i % 2 else "played")
    assert len(trace.utterances) == MAX_UTTERANCES
    summary = trace.summary()
    assert summary["utterances"] == MAX_UTTERANCES + 50
    assert summary["failed"] == (MAX_UTTERANCES + 50) // 2
    assert summary["underruns"] == MAX_UTTERANCES + 50
    assert trace.utterances[-1].index == MAX_UTTERANCES + 49  # indexes stay unique


def test_pending_utterances_are_never_folded() -> None:
    from bridge.tracing.trace import MAX_UTTERANCES

    trace = CallTrace("CA1", "twilio", clock=lambda: 0)
    pending = [trace.utterance("waiting") for _ in range(MAX_UTTERANCES + 5)]
    assert trace.utterances == pending  # nothing finished: nothing to fold yet
