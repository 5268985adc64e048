"""The drain's plan (bridge/web/drain_core.py) on an injected clock: when each phase ends."""

from __future__ import annotations

import pytest

from bridge.web.drain_core import CloseStreams, Drain, EndCalls, Exit, Phase, Wait


def drain() -> Drain:
    return Drain(deadline_s=20.0, goodbye_s=5.0, close_s=2.0)


def test_serving_until_the_first_signal_then_not_ready_and_waiting_for_the_deadline() -> None:
    plan = drain()
    assert not plan.draining
    with pytest.raises(RuntimeError):
        plan.step(0.0, held=3)
    plan.signalled(100.0)
    assert plan.draining and plan.phase is Phase.WAITING
    assert plan.step(100.0, held=3) == Wait(120.0)
    assert plan.step(119.9, held=1) == Wait(120.0)


def test_calls_that_all_end_before_the_deadline_end_the_drain_at_once() -> None:
    plan = drain()
    plan.signalled(0.0)
    assert plan.step(3.0, held=0) == Exit()
    assert plan.phase is Phase.DONE and plan.draining  # still not ready while exiting


def test_at_the_deadline_the_calls_are_ended_then_what_is_left_is_closed() -> None:
    plan = drain()
    plan.signalled(0.0)
    assert plan.step(20.0, held=2) == EndCalls(27.0)  # goodbye (5 s) and one close (2 s)
    assert plan.phase is Phase.ENDING
    assert plan.step(21.0, held=2) == EndCalls(27.0)  # a call connecting late is ended too
    assert plan.step(27.0, held=1) == CloseStreams()  # one peer never let go
    assert plan.step(29.0, held=1) == Exit()  # the closes are over, whatever they left


def test_goodbyes_all_heard_end_the_drain_before_its_bound() -> None:
    plan = drain()
    plan.signalled(0.0)
    plan.step(20.0, held=2)
    assert plan.step(23.5, held=0) == Exit()


def test_a_second_signal_ends_the_calls_at_once_and_a_third_closes_the_streams() -> None:
    plan = drain()
    plan.signalled(0.0)
    plan.signalled(4.0)
    assert plan.step(4.0, held=2) == EndCalls(11.0)
    plan.signalled(6.0)
    assert plan.step(6.0, held=2) == CloseStreams()
    plan.signalled(7.0)  # nothing left to hurry
    assert plan.step(7.0, held=2) == Exit()


def test_a_late_signal_never_extends_a_wait() -> None:
    plan = drain()
    plan.signalled(0.0)
    plan.signalled(0.0)  # both at once: the deadline is now, not 20 s later
    assert plan.step(0.0, held=1) == EndCalls(7.0)


def test_no_deadline_ends_the_calls_at_the_first_signal() -> None:
    plan = Drain(deadline_s=0.0, goodbye_s=5.0)
    plan.signalled(0.0)
    assert isinstance(plan.step(0.0, held=1), EndCalls)


def test_the_longest_drain_is_what_the_grace_period_must_cover() -> None:
    # The deadline, the goodbye with its close, the closes at the end and the traces' filing.
    assert drain().longest_s == 20.0 + 5.0 + 3 * 2.0


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        Drain(deadline_s=-1.0, goodbye_s=5.0)
    with pytest.raises(ValueError):
        Drain(deadline_s=1.0, goodbye_s=5.0, close_s=0.0)
