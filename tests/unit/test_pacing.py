import pytest

from bridge.call.pacing import FRAME_SECONDS, Pacer


def test_fresh_pacer_allows_a_full_lead_at_once():
    pacer = Pacer(lead_s=0.2)
    assert pacer.budget(100.0) == 10


def test_budget_shrinks_by_what_was_sent_and_refills_with_playout():
    pacer = Pacer(lead_s=0.2)
    pacer.sent(100.0, 10)
    assert pacer.budget(100.0) == 0
    assert pacer.buffered(100.0) == pytest.approx(0.2)
    assert pacer.budget(100.1) == 5  # 100 ms played, 100 ms of room again


def test_play_end_advances_by_audio_sent_so_late_wakeups_do_not_drift():
    pacer = Pacer(lead_s=0.2)
    now = 0.0
    pacer.sent(now, 10)
    total = 10
    for _ in range(100):
        now = pacer.wake_at(5) + 0.003  # the event loop always wakes 3 ms late
        assert pacer.budget(now) == 5
        assert not pacer.sent(now, 5)  # the lead absorbs the lateness: no gap
        total += 5
    assert abs(pacer.play_end - total * FRAME_SECONDS) < 1e-6


def test_wake_at_is_when_the_wanted_frames_fit():
    pacer = Pacer(lead_s=0.2)
    pacer.sent(0.0, 10)
    at = pacer.wake_at(5)
    assert abs(at - 0.1) < 1e-9
    assert pacer.budget(at) == 5


def test_gap_reported_when_buffer_ran_dry():
    pacer = Pacer(lead_s=0.2)
    pacer.sent(0.0, 5)          # plays until 0.1
    assert pacer.sent(0.15, 5)  # arrives 50 ms after the buffer emptied
    assert not pacer.sent(0.16, 1)


def test_reset_after_clear_forgets_buffered_audio():
    pacer = Pacer(lead_s=0.2)
    pacer.sent(0.0, 10)
    pacer.reset(0.05)
    assert pacer.buffered(0.05) == 0
    assert pacer.budget(0.05) == 10
