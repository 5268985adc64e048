"""TTS capacity: announced figures validated, measured first audio forgotten after its window."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.silma.capacity import RecentMean, announced, health_interval_s


def test_our_servers_health_announces_its_slots_and_urgent_piece_time() -> None:
    assert announced({"concurrency": 2, "urgent_job_s": 0.42}) == (2, 0.42)
    assert announced({"concurrency": 2, "urgent_job_s": None}) == (2, None)
    assert announced({}) == (None, None)


@pytest.mark.parametrize("body", [
    {"concurrency": 0}, {"concurrency": 10**9}, {"concurrency": True}, {"concurrency": "4"},
    {"concurrency": 2.0}, {"urgent_job_s": 0}, {"urgent_job_s": -1}, {"urgent_job_s": 1e9},
    {"urgent_job_s": float("nan")}, {"urgent_job_s": "0.4"}, {"urgent_job_s": True},
])
def test_nonsense_announcements_count_as_unknown(body: dict[str, Any]) -> None:
    assert announced(body) == (None, None)


def test_recent_mean_forgets_old_samples() -> None:
    recent = RecentMean(window_s=10.0)
    assert recent.mean(0.0) is None
    recent.add(0.0, 4.0)
    recent.add(5.0, 2.0)
    assert recent.mean(5.0) == 3.0
    assert recent.mean(10.0) == 2.0  # the sample at 0.0 is 10 s old: gone
    assert recent.mean(15.0) is None


def test_recent_mean_keeps_a_bounded_number_of_samples() -> None:
    recent = RecentMean(window_s=10.0, max_samples=3)
    for value in (100.0, 1.0, 2.0, 3.0):
        recent.add(0.0, value)
    assert recent.mean(0.0) == 2.0


def test_health_is_checked_sooner_until_the_server_has_timed_an_urgent_piece() -> None:
    assert health_interval_s({"concurrency": 2, "urgent_job_s": None}, 60.0) == 5.0
    assert health_interval_s({"concurrency": 2, "urgent_job_s": 0.3}, 60.0) == 60.0
    assert health_interval_s({}, 60.0) == 60.0  # announces nothing: nothing to wait for
    assert health_interval_s({"concurrency": 2}, 2.0) == 2.0
