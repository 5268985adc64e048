"""retry_core: which failures are retried, the backoff, the server's hint, the deadline and the
budget. The jitter is an injected rng, so every delay is known exactly."""

from __future__ import annotations

import pytest

from bridge.errors import TTSError, TTSReplyError, TTSUnavailable
from bridge.silma.retry_core import (
    RETRYABLE,
    Delivered,
    GiveUp,
    Kind,
    Patience,
    Retry,
    RetryBudget,
    RetryPolicy,
    classify,
    decide,
    failure_reason,
)

POLICY = RetryPolicy(deadline_s=8.0, base_delay_s=0.1, max_delay_s=2.0, max_retry_after_s=5.0)


def budget(tokens: float = 20.0) -> RetryBudget:
    return RetryBudget(tokens, 0.5)


def fixed(value: float):  # type: ignore[no-untyped-def]
    return lambda: value


@pytest.mark.parametrize("kind", sorted(RETRYABLE))
def test_retryable_kinds_are_retried_while_there_is_time(kind: Kind) -> None:
    decision = decide(POLICY, budget(), attempt=1, kind=kind, retry_after_s=None,
                      time_left_s=5.0, rng=fixed(0.5))
    assert decision == Retry(0.05)


@pytest.mark.parametrize("kind", [Kind.REFUSED, Kind.MID_STREAM])
def test_refused_and_mid_stream_are_never_retried(kind: Kind) -> None:
    b = budget()
    decision = decide(POLICY, b, attempt=1, kind=kind, retry_after_s=None, time_left_s=5.0,
                      rng=fixed(0.5))
    assert isinstance(decision, GiveUp) and b.spent == 0


def test_backoff_doubles_per_attempt_up_to_its_cap() -> None:
    delays = []
    for attempt in range(1, 8):
        d = decide(POLICY, budget(), attempt=attempt, kind=Kind.BUSY, retry_after_s=None,
                   time_left_s=100.0, rng=fixed(1.0))
        assert isinstance(d, Retry)
        delays.append(d.delay_s)
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]


def test_the_servers_retry_after_is_honoured_and_spread_by_up_to_a_quarter() -> None:
    low = decide(POLICY, budget(), attempt=1, kind=Kind.BUSY, retry_after_s=1.5,
                 time_left_s=5.0, rng=fixed(0.0))
    high = decide(POLICY, budget(), attempt=1, kind=Kind.BUSY, retry_after_s=1.5,
                  time_left_s=5.0, rng=fixed(1.0))
    assert low == Retry(1.5) and high == Retry(1.875)


def test_a_huge_retry_after_is_bounded() -> None:
    d = decide(POLICY, budget(), attempt=1, kind=Kind.BUSY, retry_after_s=3600.0,
               time_left_s=100.0, rng=fixed(0.0))
    assert d == Retry(5.0)


def test_no_retry_starts_past_the_deadline() -> None:
    d = decide(POLICY, budget(), attempt=3, kind=Kind.BUSY, retry_after_s=2.0,
               time_left_s=1.0, rng=fixed(0.0))
    assert isinstance(d, GiveUp)
    assert d.why == "deadline of 8 s reached after 3 attempts"


def test_the_budget_stops_a_retry_storm_and_successes_refill_it() -> None:
    b = budget(2.0)
    kw = dict(kind=Kind.BUSY, retry_after_s=None, time_left_s=5.0, rng=fixed(0.0))
    assert isinstance(decide(POLICY, b, attempt=1, **kw), Retry)  # type: ignore[arg-type]
    assert isinstance(decide(POLICY, b, attempt=1, **kw), Retry)  # type: ignore[arg-type]
    spent = decide(POLICY, b, attempt=1, **kw)  # type: ignore[arg-type]
    assert isinstance(spent, GiveUp) and "budget" in spent.why and b.refused == 1
    b.earn()
    b.earn()
    assert isinstance(decide(POLICY, b, attempt=1, **kw), Retry)  # type: ignore[arg-type]
    assert b.spent == 3


def test_classify() -> None:
    assert classify(TTSError("x", code="busy", retryable=True)) is Kind.BUSY
    assert classify(TTSError("x", code="timeout", retryable=True)) is Kind.TIMEOUT
    assert classify(TTSError("x", retryable=True)) is Kind.TIMEOUT
    assert classify(TTSError("x", code="stall")) is Kind.STALL
    assert classify(TTSUnavailable("gone")) is Kind.LOST
    assert classify(TTSReplyError("bad")) is Kind.REFUSED
    assert classify(TTSError("x", code="bad_request")) is Kind.REFUSED


def test_failure_reason_is_a_fixed_label() -> None:
    assert failure_reason("busy: deadline of 8 s reached after 5 attempts") == "busy"
    assert failure_reason("mid_stream: not retryable: lost") == "mid_stream"
    assert failure_reason("https://user:secret@host: junk") == "other"
    assert failure_reason(None) == "other"


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(deadline_s=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay_s=3.0, max_delay_s=2.0)


def test_busy_with_the_servers_retry_after_spends_no_budget() -> None:
    b = budget(0.0)  # spent: a failing server's retries are refused now
    paced = decide(POLICY, b, attempt=1, kind=Kind.BUSY, retry_after_s=0.5, time_left_s=5.0,
                   rng=fixed(0.0))
    assert isinstance(paced, Retry) and paced.delay_s == 0.5 and b.spent == 0
    for kind, hint in ((Kind.BUSY, None), (Kind.TIMEOUT, 0.5), (Kind.LOST, None)):
        unpaced = decide(POLICY, b, attempt=1, kind=kind, retry_after_s=hint, time_left_s=5.0,
                         rng=fixed(0.0))
        assert isinstance(unpaced, GiveUp) and "budget" in unpaced.why


def test_patience_runs_from_when_the_caller_starts_waiting() -> None:
    first = Patience(asked_at=10.0, deadline_s=8.0)
    assert first.time_left(10.0, needed_at=0.0) == 8.0  # the line was quiet: waits from now
    assert first.time_left(17.0, needed_at=0.0) == 1.0
    later = Patience(asked_at=10.0, deadline_s=8.0)
    assert later.time_left(10.5, needed_at=13.5) == 11.0  # 3 s of audio ahead
    # Told again after that audio played out: the deadline still runs from 13.5.
    assert later.time_left(20.0, needed_at=13.5) == 1.5
    grown = Patience(asked_at=0.0, deadline_s=8.0)
    assert grown.time_left(1.0, needed_at=0.5) == 7.5
    assert grown.time_left(2.0, needed_at=6.0) == 12.0  # the piece ahead arrived: 4 s more
    assert grown.time_left(3.0, needed_at=1.0) == 11.0  # never earlier than once told


def test_a_piece_cut_mid_stream_resumes_where_the_caller_is() -> None:
    delivered = Delivered()
    delivered.new_attempt()
    assert delivered.take(b"a" * 8000, 8000) == b"a" * 8000  # 1 s of mu-law heard
    assert delivered.take(b"b" * 4000, 8000) == b"b" * 4000  # 1.5 s
    delivered.new_attempt()  # cut: the new rendering starts from the top
    assert delivered.take(b"c" * 8000, 8000) == b""  # the first second: heard already
    assert delivered.take(b"d" * 8000, 8000) == b"d" * 4000  # the second half is new
    assert delivered.take(b"e" * 100, 8000) == b"e" * 100
    assert abs(delivered.seconds - (1.5 + 0.5 + 100 / 8000)) < 1e-9
    assert delivered.resumable


def test_a_resumed_attempt_in_another_format_skips_the_same_time_on_sample_bounds() -> None:
    delivered = Delivered()
    delivered.new_attempt()
    delivered.take(b"u" * 800, 8000)  # 0.1 s of 8 kHz mu-law
    delivered.new_attempt()
    f32_24k = 4 * 24000
    assert len(delivered.take(b"f" * 20000, f32_24k)) == 20000 - 9600  # 0.1 s of float32
    odd = Delivered()
    odd.take(b"u" * 5, 8000)  # 5/8000 s: 20 bytes of 16 kHz s16le, 10 of them
    odd.new_attempt()
    assert len(odd.take(b"s" * 100, 2 * 16000)) == 100 - 20
    tiny = Delivered()
    tiny.take(b"u" * 1, 8000)  # 1/8000 s: 4 bytes of s16le at 16 kHz, 2.0 samples
    tiny.new_attempt()
    assert len(tiny.take(b"s" * 10, 2 * 16000)) == 6  # cut on a 4-byte boundary


def test_audio_of_unknown_byte_rate_makes_the_piece_unresumable() -> None:
    delivered = Delivered()
    delivered.new_attempt()
    assert delivered.take(b"RIFF....WAVE", None) == b"RIFF....WAVE"
    assert not delivered.resumable
