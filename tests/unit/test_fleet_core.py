"""Fleet decisions: least load per slot, avoid, eject on faults only, backoff, readmission."""

from __future__ import annotations

import pytest

from bridge.silma.fleet_core import EJECT_S, FleetCore

A, B, C = "ws://a/ws", "ws://b/ws", "ws://c/ws"


def test_requests_go_to_the_least_loaded_server_and_ties_are_taken_in_turn() -> None:
    fleet = FleetCore([A, B, C])
    assert [fleet.pick(0.0, {}) for _ in range(4)] == [A, B, C, A]
    assert fleet.pick(0.0, {A: 1.0, B: 0.5, C: 0.5}) == B
    assert fleet.pick(0.0, {A: 1.0, B: 0.5, C: 0.5}) == C  # B and C tie: the turn goes on
    assert fleet.pick(0.0, {A: 0.2, B: 0.5, C: 0.5}) == A


def test_the_retry_loop_avoids_the_server_that_failed_unless_nothing_else_is_left() -> None:
    fleet = FleetCore([A, B])
    assert fleet.pick(0.0, {}, avoid={A}) == B
    assert fleet.pick(0.0, {}, avoid={A}) == B
    assert fleet.pick(0.0, {A: 0.0, B: 5.0}, avoid={A, B}) == A


def test_faults_eject_with_a_doubling_backoff_and_a_success_clears_the_record() -> None:
    fleet = FleetCore([A, B])
    fleet.outcome(A, 10.0, "lost")
    assert fleet.pick(10.0, {}) == B
    assert fleet.pick(10.0, {}) == B
    assert fleet.pick(10.0 + EJECT_S[0], {}) == A  # readmitted: the next request is its probe
    fleet.outcome(A, 11.0, "stall")  # the probe failed: twice as long
    assert fleet.servers[A].ejected_until == 11.0 + 2 * EJECT_S[0]
    assert fleet.servers[A].ejections == 2
    fleet.outcome(A, 13.0, None)
    fleet.outcome(A, 13.0, "lost")
    assert fleet.servers[A].ejected_until == 13.0 + EJECT_S[0]  # the record was cleared


def test_first_up_names_the_first_server_not_ejected_and_changes_nothing() -> None:
    fleet = FleetCore([A, B])
    assert fleet.first_up(0.0) == A
    fleet.outcome(A, 0.0, "lost")
    assert fleet.first_up(0.0) == B
    fleet.outcome(B, 0.5, "lost")
    assert fleet.first_up(0.5) == A  # both out: A is back sooner
    assert fleet.pick(5.0, {}) == A  # the turn was not moved by first_up


def test_requests_failing_together_are_one_incident_and_the_backoff_is_bounded() -> None:
    fleet = FleetCore([A])
    for _ in range(20):  # every request in flight when the server died
        fleet.outcome(A, 0.0, "lost")
    assert fleet.servers[A].ejected_until == EJECT_S[0] and fleet.servers[A].ejections == 1
    now = 0.0
    for _ in range(20):  # each probe fails again
        now = fleet.servers[A].ejected_until
        fleet.outcome(A, now, "unhealthy")
    assert fleet.servers[A].ejected_until - now == EJECT_S[1]
    assert fleet.servers[A].ejections == 21


@pytest.mark.parametrize("load_not_fault", ["busy", "timeout", "refused", "mid_stream"])
def test_load_and_bad_requests_never_eject(load_not_fault: str) -> None:
    fleet = FleetCore([A, B])
    fleet.outcome(A, 0.0, load_not_fault)
    assert not fleet.servers[A].ejected(0.0)


def test_with_every_server_ejected_the_one_back_soonest_is_still_tried() -> None:
    fleet = FleetCore([A, B])
    fleet.outcome(A, 0.0, "lost")
    fleet.outcome(A, 1.0, "lost")  # its probe failed: A is out until 3.0
    fleet.outcome(B, 1.5, "lost")  # B: out until 2.5
    assert fleet.pick(1.6, {}) == B


def test_an_unknown_server_and_an_empty_fleet() -> None:
    fleet = FleetCore([A])
    fleet.outcome("ws://elsewhere/ws", 0.0, "lost")  # a connection from before a change
    assert [fleet.pick(0.0, {}) for _ in range(2)] == [A, A]
    with pytest.raises(ValueError):
        FleetCore([])
