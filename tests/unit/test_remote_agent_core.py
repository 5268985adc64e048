"""The remote agent's reconnect plan and gap backlog: bounded, jittered, never a tight loop."""

from __future__ import annotations

import pytest

from bridge.agent.remote_core import MAX_ATTEMPTS, Backlog, Backoff, GiveUp, Reconnects, Retry

BACKOFF = Backoff(base_s=0.25, cap_s=2.0, stable_s=10.0)


def test_delays_grow_to_the_cap_with_jitter_between_half_and_whole():
    for rng, factor in ((lambda: 0.0, 0.5), (lambda: 1.0, 1.0)):
        plan = Reconnects(6, BACKOFF, rng=rng)
        plan.connected(0.0)
        delays = [plan.lost(1.0, "lost")]
        delays += [plan.failed("refused") for _ in range(5)]
        assert [d.attempt for d in delays if isinstance(d, Retry)] == [1, 2, 3, 4, 5, 6]
        assert [d.delay_s for d in delays if isinstance(d, Retry)] == pytest.approx(
            [factor * s for s in (0.25, 0.5, 1.0, 2.0, 2.0, 2.0)])


def test_attempts_are_bounded_and_giving_up_says_why():
    plan = Reconnects(2, BACKOFF, rng=lambda: 0.5)
    plan.connected(0.0)
    assert isinstance(plan.lost(1.0, "closed with code 1006"), Retry)
    assert isinstance(plan.failed("upgrade refused: HTTP 503"), Retry)
    decision = plan.failed("upgrade refused: HTTP 503")
    assert decision == GiveUp("upgrade refused: HTTP 503 (2 reconnect attempts spent)")


def test_no_attempts_gives_up_at_the_first_loss():
    plan = Reconnects(0, BACKOFF)
    plan.connected(0.0)
    assert isinstance(plan.lost(100.0, "lost"), GiveUp)


def test_a_connection_that_held_starts_the_count_again():
    plan = Reconnects(1, BACKOFF, rng=lambda: 0.5)
    plan.connected(0.0)
    assert isinstance(plan.lost(50.0, "lost"), Retry)
    plan.connected(51.0)
    assert isinstance(plan.lost(61.0, "lost"), Retry)  # up 10 s: a fresh attempt


def test_an_agent_that_drops_every_connection_at_once_is_not_retried_forever():
    plan = Reconnects(3, BACKOFF, rng=lambda: 0.5)
    plan.connected(0.0)
    now = 30.0
    decisions = []
    for _ in range(4):
        decisions.append(plan.lost(now, "closed with code 1000"))
        now += 0.5
        plan.connected(now)  # accepted, then dropped within stable_s
        now += 0.1
    assert [type(d) for d in decisions] == [Retry, Retry, Retry, GiveUp]


@pytest.mark.parametrize("attempts", [-1, MAX_ATTEMPTS + 1])
def test_attempts_out_of_bounds_are_refused(attempts):
    with pytest.raises(ValueError, match="reconnect attempts"):
        Reconnects(attempts)


def test_backoff_must_be_positive_and_capped_above_its_base():
    with pytest.raises(ValueError):
        Backoff(base_s=0)
    with pytest.raises(ValueError):
        Backoff(base_s=3, cap_s=2)


def test_the_backlog_keeps_order_and_drops_the_oldest_past_its_bound():
    backlog = Backlog(limit=3)
    for n in range(5):
        backlog.put(f"e{n}")
    assert backlog.dropped == 2
    assert len(backlog) == 3
    first = backlog.take()
    assert first == "e2"
    backlog.put_back(first)  # not delivered: first again
    assert [backlog.take() for _ in range(3)] == ["e2", "e3", "e4"]
    assert len(backlog) == 0
