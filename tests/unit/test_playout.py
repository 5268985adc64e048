"""The emulated provider jitter buffer, driven with explicit times."""

import pytest

from bridge.emulator.playout import PlayoutBuffer

FRAME = 160  # 20 ms of mu-law


def test_mark_is_due_when_the_audio_before_it_has_played() -> None:
    buf = PlayoutBuffer()
    buf.receive(0.0, 5 * FRAME)  # 100 ms
    buf.mark(0.0, "utt-1")
    assert buf.next_mark_due() == pytest.approx(0.1)
    assert buf.due_marks(0.099) == []
    assert buf.due_marks(0.1) == ["utt-1"]
    assert buf.next_mark_due() is None
    assert buf.due_marks(1.0) == []


def test_mark_with_nothing_queued_is_due_at_once() -> None:
    buf = PlayoutBuffer()
    buf.mark(2.0, "empty")
    assert buf.due_marks(2.0) == ["empty"]


def test_audio_plays_back_to_back_and_starts_on_arrival_when_idle() -> None:
    buf = PlayoutBuffer()
    buf.receive(0.0, 8000)  # 1 s, sent all at once ahead of real time
    buf.receive(0.01, 8000)  # queued behind: plays 1..2 s
    buf.mark(0.02, "a")
    assert buf.next_mark_due() == pytest.approx(2.0)
    assert buf.buffered_seconds(0.5) == pytest.approx(1.5)
    assert buf.due_marks(2.0) == ["a"]
    # Idle from 2 s; audio arriving at 5 s starts playing at 5 s, not at 2 s.
    buf.receive(5.0, 4000)
    buf.mark(5.0, "b")
    assert buf.next_mark_due() == pytest.approx(5.5)
    assert buf.due_marks(5.5) == ["b"]


def test_marks_fall_due_in_order() -> None:
    buf = PlayoutBuffer()
    buf.receive(0.0, 800)
    buf.mark(0.0, "one")
    buf.receive(0.0, 800)
    buf.mark(0.0, "two")
    assert buf.due_marks(0.15) == ["one"]
    assert buf.due_marks(0.2) == ["two"]


def test_buffered_and_played_seconds() -> None:
    buf = PlayoutBuffer()
    assert buf.buffered_seconds(0.0) == 0.0
    assert buf.played_seconds == 0.0
    buf.receive(1.0, 8000)
    assert buf.buffered_seconds(1.25) == pytest.approx(0.75)
    assert buf.played_seconds == pytest.approx(0.0)
    assert buf.due_marks(1.25) == []  # any call moves the buffer's notion of now
    assert buf.played_seconds == pytest.approx(0.25)
    assert buf.buffered_seconds(3.0) == 0.0


def test_clear_drops_audio_and_returns_pending_marks() -> None:
    buf = PlayoutBuffer()
    buf.receive(0.0, 8000)
    buf.mark(0.0, "a")
    buf.receive(0.0, 8000)
    buf.mark(0.0, "b")
    assert buf.clear(0.5) == ["a", "b"]  # Twilio echoes every pending mark on clear
    assert buf.buffered_seconds(0.5) == 0.0
    assert buf.next_mark_due() is None
    assert buf.played_seconds == pytest.approx(0.5)
    # New audio after the clear plays at once.
    buf.receive(0.6, 800)
    buf.mark(0.6, "c")
    assert buf.next_mark_due() == pytest.approx(0.7)


def test_clear_without_cleared_acks_returns_only_played_marks() -> None:
    buf = PlayoutBuffer(checkpoint_acks_cleared=False)  # Plivo
    buf.receive(0.0, 800)
    buf.mark(0.0, "played")
    buf.receive(0.0, 8000)
    buf.mark(0.0, "cut")
    assert buf.clear(0.5) == ["played"]
    assert buf.due_marks(10.0) == []


def test_checkpoints_dropped_by_a_clear_leave_nothing_pending() -> None:
    buf = PlayoutBuffer(checkpoint_acks_cleared=False)  # Plivo
    buf.receive(0.0, 8000)
    buf.mark(0.0, "a")
    buf.mark(0.0, "b")
    assert buf.pending_marks == 2
    assert buf.clear(0.5) == []  # neither had played: both dropped, never acknowledged
    assert buf.pending_marks == 0 and buf.next_mark_due() is None
    buf.mark(0.6, "after")  # the buffer was emptied: a new checkpoint is due at once
    assert buf.due_marks(0.6) == ["after"]


def test_clear_with_cleared_acks_puts_played_marks_first() -> None:
    buf = PlayoutBuffer()
    buf.receive(0.0, 800)
    buf.mark(0.0, "played")
    buf.receive(0.0, 8000)
    buf.mark(0.0, "cut")
    assert buf.clear(0.5) == ["played", "cut"]


def test_gap_inside_an_utterance_is_an_underrun() -> None:
    buf = PlayoutBuffer()
    buf.receive(0.0, FRAME)  # plays 0..0.02
    buf.receive(0.02, FRAME)  # exactly on time: no gap
    buf.receive(0.1, FRAME)  # buffer ran dry at 0.04: 60 ms of silence mid-utterance
    assert buf.underruns == 1
    assert buf.underrun_seconds == pytest.approx(0.06)
    buf.mark(0.1, "end")
    assert buf.due_marks(0.121) == ["end"]


def test_silence_between_utterances_is_not_an_underrun() -> None:
    buf = PlayoutBuffer()
    buf.receive(0.0, FRAME)
    buf.mark(0.0, "first")
    buf.receive(3.0, FRAME)  # a new utterance long after the last one ended
    buf.receive(3.02, FRAME)
    buf.mark(3.02, "second")
    assert buf.underruns == 0
    assert buf.underrun_seconds == 0.0


def test_no_underrun_after_clear() -> None:
    buf = PlayoutBuffer()
    buf.receive(0.0, FRAME)
    buf.clear(0.01)
    buf.receive(1.0, FRAME)
    assert buf.underruns == 0


def test_many_frames_on_time_accumulate_no_spurious_underrun() -> None:
    buf = PlayoutBuffer()
    for k in range(10_000):  # float sums of 0.02 drift; exact arrival must not count
        buf.receive(k * 0.02, FRAME)
    assert buf.underruns == 0
