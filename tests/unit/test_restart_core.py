"""The local TTS server's restart decisions, on an injected clock."""

from bridge.silma.restart_core import ChildState, RestartCore, RestartPolicy

POLICY = RestartPolicy(base_s=1.0, max_s=4.0, stable_s=30.0, max_failures=4)


def core() -> RestartCore:
    c = RestartCore(POLICY, rng=lambda: 1.0)  # no jitter: the full delay
    c.ready(0.0)
    return c


def test_a_death_is_restarted_after_a_growing_bounded_delay():
    c = core()
    assert c.failed(10.0, "killed by signal 9") == 11.0
    assert c.state is ChildState.WAITING and c.deaths == 1
    c.starting()
    assert c.failed(11.0, "exited with code 1") == 13.0
    c.starting()
    assert c.failed(13.0, "exited with code 1") == 17.0
    assert c.failed_starts == 2 and c.restarts == 0


def test_jitter_is_half_to_all_of_the_delay():
    c = RestartCore(POLICY, rng=lambda: 0.0)
    c.ready(0.0)
    assert c.failed(5.0, "x") == 5.5


def test_a_child_that_ran_stably_starts_the_delay_over():
    c = core()
    c.failed(1.0, "a")
    c.ready(2.0)
    assert c.restarts == 1
    assert c.failed(100.0, "b") == 101.0  # ran 98 s: a one-off, first delay again
    assert c.failures_in_a_row == 1


def test_repeated_failures_give_up_with_the_reason():
    c = core()
    for when in range(3):
        assert c.failed(float(when), "exited with code 1") is not None
        c.starting()
    assert c.failed(3.0, "exited with code 2") is None
    assert c.state is ChildState.DOWN
    assert c.reason == "4 failures in a row, the last: exited with code 2"
    assert c.stats(3.0)["down_reason"] == c.reason


def test_a_stopped_server_is_not_restarted():
    c = core()
    c.stopped()
    assert c.failed(1.0, "terminated") is None
    assert c.state is ChildState.STOPPED
