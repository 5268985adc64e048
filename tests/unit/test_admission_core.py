"""Admission of new calls: bounds, reservations, the TTS's announced and measured capacity."""

from __future__ import annotations

import pytest

from bridge.call.admission_core import Admission, Admit, Refuse
from bridge.silma.capacity import Capacity

UNKNOWN = Capacity()


def test_no_bound_configured_admits_everything() -> None:
    admission = Admission(max_calls=0, first_words_s=3.0)
    for i in range(1000):
        assert admission.decide(f"c{i}", 0.0, live=(), waiting=0, capacity=UNKNOWN) == Admit()


def test_max_calls_counts_live_calls_and_answered_ones_not_yet_live() -> None:
    admission = Admission(max_calls=2, first_words_s=3.0)
    assert admission.decide("a", 0.0, live=(), waiting=0, capacity=UNKNOWN) == Admit()
    assert admission.decide("b", 0.0, live=(), waiting=0, capacity=UNKNOWN) == Admit()
    refused = admission.decide("c", 0.1, live=(), waiting=0, capacity=UNKNOWN)
    assert isinstance(refused, Refuse) and refused.reason == "max_calls"
    assert "2 calls held, at most 2" in refused.detail
    # "a" is live now (its reservation is spent, it counts once), "x" is another live call.
    admission.started("a")
    refused = admission.decide("c", 0.2, live={"a", "x"}, waiting=0, capacity=UNKNOWN)
    assert isinstance(refused, Refuse) and "3 calls held" in refused.detail
    assert admission.pending(0.2) == 1  # only "b" still waits for its stream


def test_a_call_that_ended_frees_its_place() -> None:
    admission = Admission(max_calls=1, first_words_s=3.0)
    assert admission.decide("a", 0.0, live=(), waiting=0, capacity=UNKNOWN) == Admit()
    admission.started("a")
    assert isinstance(admission.decide("b", 1.0, live={"a"}, waiting=0, capacity=UNKNOWN),
                      Refuse)
    assert admission.decide("b", 2.0, live=(), waiting=0, capacity=UNKNOWN) == Admit()


def test_a_reservation_whose_stream_never_comes_lapses() -> None:
    admission = Admission(max_calls=1, first_words_s=3.0, reservation_s=10.0)
    assert admission.decide("a", 0.0, live=(), waiting=0, capacity=UNKNOWN) == Admit()
    assert isinstance(admission.decide("b", 9.9, live=(), waiting=0, capacity=UNKNOWN),
                      Refuse)
    assert admission.decide("b", 10.0, live=(), waiting=0, capacity=UNKNOWN) == Admit()


def test_a_retried_webhook_keeps_its_place() -> None:
    admission = Admission(max_calls=1, first_words_s=3.0)
    assert admission.decide("a", 0.0, live=(), waiting=0, capacity=UNKNOWN) == Admit()
    assert admission.decide("a", 0.5, live=(), waiting=0, capacity=UNKNOWN) == Admit()
    assert admission.decide("a", 1.0, live={"a"}, waiting=0, capacity=UNKNOWN) == Admit()


def test_announced_capacity_bounds_the_calls_waiting_for_first_words() -> None:
    # 2 slots, 0.5 s an urgent piece, 3 s bound: after the pieces in the slots now (0.5 s),
    # 10 callers can start within 3 s (5 rounds).
    admission = Admission(max_calls=0, first_words_s=3.0)
    tts = Capacity(concurrency=2, urgent_piece_s=0.5)
    admitted = [admission.decide(f"c{i}", 0.0, live=(), waiting=0, capacity=tts)
                for i in range(20)]
    assert admitted[:10] == [Admit()] * 10
    refused = admitted[10]
    assert isinstance(refused, Refuse) and refused.reason == "tts_capacity"
    assert "10 calls wait" in refused.detail and "after 3.50 s" in refused.detail


def test_calls_already_heard_do_not_count_only_those_waiting() -> None:
    admission = Admission(max_calls=0, first_words_s=3.0)
    tts = Capacity(concurrency=2, urgent_piece_s=0.5)
    live = {f"l{i}" for i in range(100)}  # 100 live calls, 9 of them waiting for first audio
    assert admission.decide("new", 0.0, live=live, waiting=9, capacity=tts) == Admit()
    refused = admission.decide("next", 0.0, live=live, waiting=9, capacity=tts)
    assert isinstance(refused, Refuse) and refused.reason == "tts_capacity"


def test_measured_slowness_refuses_until_it_is_over() -> None:
    admission = Admission(max_calls=0, first_words_s=3.0)
    slow = admission.decide("a", 0.0, live=(), waiting=0,
                            capacity=Capacity(first_audio_s=3.4))
    assert isinstance(slow, Refuse) and slow.reason == "tts_slow"
    assert "3.40 s" in slow.detail
    assert admission.decide("a", 1.0, live=(), waiting=0,
                            capacity=Capacity(first_audio_s=2.9)) == Admit()


def test_a_server_that_announces_nothing_is_bounded_by_measurement_only() -> None:
    admission = Admission(max_calls=0, first_words_s=3.0)
    partial = Capacity(concurrency=2, urgent_piece_s=None, first_audio_s=0.2)
    for i in range(50):
        assert admission.decide(f"c{i}", 0.0, live=(), waiting=40, capacity=partial) == Admit()


@pytest.mark.parametrize("kwargs", [{"max_calls": -1, "first_words_s": 3.0},
                                    {"max_calls": 0, "first_words_s": 0.0},
                                    {"max_calls": 0, "first_words_s": 3.0, "reservation_s": 0}])
def test_nonsense_bounds_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Admission(**kwargs)  # type: ignore[arg-type]



def test_a_draining_bridge_refuses_new_calls_but_not_a_retried_webhook_of_its_own() -> None:
    admission = Admission(max_calls=0, first_words_s=3.0)
    assert admission.decide("a", 0.0, live=(), waiting=0, capacity=UNKNOWN) == Admit()
    refused = admission.decide("b", 0.1, live=(), waiting=0, capacity=UNKNOWN, draining=True)
    assert isinstance(refused, Refuse) and refused.reason == "draining"
    assert admission.pending(0.1) == 1  # the refused call reserved nothing
    # "a" was answered before the drain: its carrier's retry keeps the place it has.
    assert admission.decide("a", 0.2, live=(), waiting=0, capacity=UNKNOWN,
                            draining=True) == Admit()
