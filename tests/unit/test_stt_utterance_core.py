"""The utterance buffer: pre-roll in front of the detector's start, the length bound, times
on the clock of audio consumed."""

from __future__ import annotations

import pytest

from bridge.stt.utterance_core import Utterance, UtteranceBuffer


def frames(buffer: UtteranceBuffer, n: int, byte: int = 0x10) -> list[Utterance]:
    cuts = []
    for _ in range(n):
        cuts += buffer.audio(bytes([byte]) * 160)
    return cuts


def test_the_utterance_starts_with_the_preroll() -> None:
    buffer = UtteranceBuffer(preroll_s=0.4, max_s=30)
    frames(buffer, 50, 0x01)  # 1 s before the start
    buffer.speech_started()
    frames(buffer, 25, 0x02)
    utterance = buffer.speech_ended()
    assert utterance is not None
    assert utterance.mulaw == b"\x01" * 3200 + b"\x02" * 4000
    assert (utterance.start_s, utterance.end_s, utterance.cut) == (0.6, 1.5, False)
    assert utterance.seconds == pytest.approx(0.9)


def test_a_start_right_away_has_only_the_audio_there_was() -> None:
    buffer = UtteranceBuffer(preroll_s=0.4)
    frames(buffer, 5)
    buffer.speech_started()
    frames(buffer, 5)
    utterance = buffer.speech_ended()
    assert utterance is not None and (utterance.start_s, utterance.end_s) == (0.0, 0.2)


def test_an_end_without_a_start_and_a_repeated_start_change_nothing() -> None:
    buffer = UtteranceBuffer(preroll_s=0.1)
    frames(buffer, 10)
    assert buffer.speech_ended() is None
    buffer.speech_started()
    frames(buffer, 5)
    buffer.speech_started()  # already in speech: the utterance goes on
    frames(buffer, 5)
    utterance = buffer.speech_ended()
    assert utterance is not None and utterance.seconds == pytest.approx(0.3)
    assert not buffer.in_speech and buffer.consumed_s == pytest.approx(0.4)


def test_long_speech_is_cut_at_the_bound_and_goes_on() -> None:
    buffer = UtteranceBuffer(preroll_s=0.0, max_s=1.0)
    buffer.speech_started()
    cuts = frames(buffer, 120)  # 2.4 s
    assert [(u.start_s, u.end_s, u.cut) for u in cuts] == [(0.0, 1.0, True), (1.0, 2.0, True)]
    assert all(len(u.mulaw) == 8000 for u in cuts)
    rest = buffer.speech_ended()
    assert rest is not None and (rest.start_s, rest.end_s, rest.cut) == (2.0, 2.4, False)


def test_an_end_right_after_a_cut_hands_out_nothing() -> None:
    buffer = UtteranceBuffer(preroll_s=0.0, max_s=0.2)
    buffer.speech_started()
    assert len(frames(buffer, 10)) == 1
    assert buffer.speech_ended() is None


def test_one_large_piece_is_cut_as_often_as_it_must() -> None:
    buffer = UtteranceBuffer(preroll_s=0.0, max_s=0.5)
    buffer.speech_started()
    cuts = buffer.audio(b"\x10" * 8000 * 2)
    assert [u.seconds for u in cuts] == [0.5] * 4


def test_the_preroll_never_outgrows_its_bound() -> None:
    buffer = UtteranceBuffer(preroll_s=0.05)
    buffer.audio(b"\x10" * 100_000)
    buffer.speech_started()
    utterance = buffer.speech_ended()
    assert utterance is not None and len(utterance.mulaw) == 400


@pytest.mark.parametrize(("preroll_s", "max_s"), [(-0.1, 1.0), (1.0, 1.0), (0.0, 0.0)])
def test_bad_bounds_are_refused(preroll_s: float, max_s: float) -> None:
    with pytest.raises(ValueError, match="preroll_s"):
        UtteranceBuffer(preroll_s=preroll_s, max_s=max_s)
