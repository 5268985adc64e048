"""serve --workers N, its decisions (bridge/workers_core.py): which settings can run N workers,
what each worker is told, when a worker that exited starts again, the supervisor's exit."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime

import pytest

from bridge.errors import ConfigError
from bridge.settings import FleetSettings, Settings, SilmaSettings, load_settings
from bridge.store.models import SilmaCredentials
from bridge.workers_core import (
    Exited,
    GiveUp,
    Restart,
    RestartPolicy,
    SlotState,
    WorkersCore,
    check,
    exit_status,
    instance_base,
    internal_url,
    needs_local_tts,
    plan,
    stop_bound_s,
)

REDIS = "redis://127.0.0.1:6379/0"
POLICY = RestartPolicy(base_s=0.5, max_s=4.0, stable_s=60.0)


def settings(**changes: object) -> Settings:
    return load_settings(env={}).replace(**{"redis_url": REDIS, **changes})


def core(count: int = 2, rng: float = 1.0) -> WorkersCore:
    return WorkersCore(count, POLICY, rng=lambda: rng)


# -- what can run ------------------------------------------------------------------------------
def test_one_worker_needs_nothing_more() -> None:
    check(load_settings(env={}), 1)  # no Redis, port as configured: today's bridge


@pytest.mark.parametrize(("changes", "workers", "needle"), [
    ({"redis_url": ""}, 2, "BRIDGE_REDIS_URL"),
    ({}, 0, "between 1 and"),
    ({}, 257, "between 1 and"),
    ({"port": 0}, 2, "fixed port"),
    ({"database_url": "sqlite+aiosqlite://"}, 2, "in-memory"),
    ({"database_url": "sqlite:///:memory:"}, 2, "in-memory"),
    ({"ops_port": 8079}, 2, "overlaps BRIDGE_PORT"),
    ({"ops_port": 65535}, 2, "past 65535"),
    ({"ops_port": 9100, "fleet": FleetSettings(worker_port=9101)}, 2,
     "BRIDGE_FLEET_WORKER_PORT 9101..9102 (one port a worker) overlaps BRIDGE_OPS_PORT"),
])
def test_settings_that_n_workers_cannot_share_are_refused(
        changes: dict[str, object], workers: int, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        check(settings(**changes), workers)


def test_a_sqlite_file_and_postgresql_are_shared_stores() -> None:
    check(settings(database_url="sqlite+aiosqlite:///data/bridge.db"), 4)
    check(settings(database_url="postgresql://u@db/bridge", ops_port=9100,
                   fleet=FleetSettings(worker_port=9200)), 4)


# -- what each worker is told ------------------------------------------------------------------
def test_each_worker_gets_its_own_id_ops_port_and_internal_port() -> None:
    s = settings(ops_port=9100, fleet=FleetSettings(worker_port=9200))
    first, second = plan(s, "host-7", 0, 0), plan(s, "host-7", 1, 0)
    assert (first.instance_id, first.ops_port, first.internal_port) == ("host-7-w0", 9100, 9200)
    assert (second.instance_id, second.ops_port, second.internal_port) == ("host-7-w1", 9101,
                                                                           9201)
    assert second.environment(s) == {"BRIDGE_HOST": "127.0.0.1", "BRIDGE_PORT": "8080",
                                     "BRIDGE_OPS_PORT": "9101",
                                     "BRIDGE_FLEET_INSTANCE_ID": "host-7-w1"}


def test_a_restarted_worker_is_a_new_fleet_member() -> None:
    # Its dead incarnation's calls are filed "bridge lost" by the others, not taken over.
    assert plan(settings(), "b", 1, 2).instance_id == "b-w1r2"


def test_without_ports_configured_each_worker_picks_its_own_and_has_no_ops_listener() -> None:
    p = plan(settings(), "b", 3, 0)
    assert (p.ops_port, p.internal_port) == (0, 0)


def test_instance_base_is_the_configured_id_else_host_and_supervisor_pid() -> None:
    assert instance_base(settings(), "box", 42) == "box-42"
    assert instance_base(settings(fleet=FleetSettings(instance_id="eu-1")), "box", 42) == "eu-1"


@pytest.mark.parametrize(("configured", "host", "expected"), [
    ("", "127.0.0.1", "http://127.0.0.1:9201"),
    ("", "::1", "http://[::1]:9201"),
    ("http://10.0.0.5:8080", "0.0.0.0", "http://10.0.0.5:9201"),
    ("https://bridge-a.internal/", "0.0.0.0", "https://bridge-a.internal:9201"),
    ("http://[fd00::5]:8080", "::", "http://[fd00::5]:9201"),
])
def test_the_internal_url_is_the_configured_one_on_the_workers_own_port(
        configured: str, host: str, expected: str) -> None:
    s = settings(host=host, fleet=FleetSettings(internal_url=configured))
    assert internal_url(s, 9201) == expected


def test_the_local_tts_server_is_needed_only_when_some_call_would_speak_in_local_mode() -> None:
    nothing = SilmaSettings()
    assert needs_local_tts(nothing, [None])  # no endpoint, no region: make run
    with_endpoint = SilmaSettings(endpoint="https://gpu.example/tts")
    assert not needs_local_tts(with_endpoint, [None])
    with_region = SilmaSettings(regions={"eu-west": "https://eu.example", "us-east": ""})
    assert not needs_local_tts(with_region, [None])  # auto before measuring: the first one
    cloud = SilmaSettings(api="v2")
    assert not needs_local_tts(cloud, [None])
    local_row = dataclasses.replace(_row(), is_local=True)
    assert needs_local_tts(with_endpoint, [None, local_row])  # one tenant in local mode


def _row() -> SilmaCredentials:
    return SilmaCredentials(user_id="u", api_endpoint="", api_key="", is_local=False,
                            region="auto", reference_audio=None, reference_text="",
                            updated_at=datetime.now(UTC))


def test_the_stop_bound_covers_the_longest_drain_and_the_listeners_shutdown() -> None:
    s = settings()  # deadline 20 + mark timeout 5 + 3 closes of 2 + listener 5 + margin 10
    assert stop_bound_s(s) == 46.0


@pytest.mark.parametrize(("returncode", "status"), [(0, 0), (2, 2), (-9, 137), (-15, 143)])
def test_exit_status_as_a_shell_reports_it(returncode: int, status: int) -> None:
    assert exit_status(returncode) == status


# -- restarts ----------------------------------------------------------------------------------
def test_a_worker_that_dies_is_restarted_with_a_doubling_capped_backoff() -> None:
    c = core()
    for i in (0, 1):
        c.started(i)
        c.ready(i, now=0.0)
    delays = []
    now = 1.0
    for _ in range(6):
        decision = c.exited(1, now, -9)
        assert isinstance(decision, Restart) and decision.reason == "killed by signal 9"
        delays.append(decision.delay_s)
        now = decision.at
        assert c.started(1) == len(delays)
        c.ready(1, now)
        now += 1.0  # dies again a second later: a crash loop
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert c.slots[0].state is SlotState.RUNNING  # the other one is untouched


def test_the_backoff_is_jittered_between_half_and_all_of_it() -> None:
    c = core(rng=0.0)
    c.started(0)
    c.ready(0, 0.0)
    decision = c.exited(0, 5.0, 1)
    assert isinstance(decision, Restart)
    assert decision.delay_s == 0.25 and decision.at == 5.25


def test_a_worker_that_ran_stably_starts_its_backoff_over() -> None:
    c = core()
    c.started(0)
    c.ready(0, 0.0)
    c.exited(0, 1.0, 1)
    c.started(0)
    c.ready(0, 2.0)
    c.exited(0, 3.0, 1)  # second failure in a row: 1 s
    c.started(0)
    c.ready(0, 4.0)
    decision = c.exited(0, 4.0 + POLICY.stable_s, 1)
    assert isinstance(decision, Restart) and decision.delay_s == 0.5


def test_a_restart_that_never_gets_ready_counts_as_a_failure_in_a_row() -> None:
    c = core()
    c.started(0)
    c.ready(0, 0.0)
    c.exited(0, 100.0, -9)
    c.started(0)
    decision = c.exited(0, 101.0, 1)  # the restart failed before it listened
    assert isinstance(decision, Restart) and decision.delay_s == 1.0
    assert c.slots[0].deaths == 2


def test_an_exit_of_0_not_asked_for_is_a_death_too() -> None:
    c = core()
    c.started(0)
    c.ready(0, 0.0)
    assert isinstance(c.exited(0, 1.0, 0), Restart)


def test_a_first_start_that_fails_stops_everything_with_its_status() -> None:
    c = core()
    c.started(0)
    c.started(1)
    c.ready(1, 0.0)
    decision = c.exited(0, 1.0, 2)  # e.g. a ConfigError: exit 2
    assert decision == GiveUp(2, "worker 0 failed to start: exited with code 2")
    assert c.stopping and c.slots[1].state is SlotState.RUNNING  # still to be signalled
    assert c.exited(1, 2.0, 0) == Exited(0)
    assert c.all_exited and c.exit_status() == 2


def test_a_first_start_killed_or_exiting_0_still_gives_a_failing_status() -> None:
    c = core(count=1)
    c.started(0)
    assert c.exited(0, 1.0, 0) == GiveUp(1, "worker 0 failed to start: exited with code 0")
    assert c.exit_status() == 1


def test_stop_names_the_workers_to_signal_and_ends_a_pending_restart() -> None:
    c = core(count=3)
    for i in range(3):
        c.started(i)
    c.ready(0, 0.0)
    c.ready(1, 0.0)
    c.exited(1, 1.0, -9)  # waiting for its restart
    assert c.stop() == [0, 2]  # running and starting; the waiting one is done
    assert c.slots[1].state is SlotState.EXITED
    with pytest.raises(RuntimeError):
        c.started(1)
    assert c.exited(0, 2.0, 0) == Exited(0)
    assert not c.all_exited
    assert c.exited(2, 2.0, -15) == Exited(143)
    assert c.all_exited
    assert c.exit_status() == 143  # the worst: worker 2 died of the signal before its drain


def test_the_exit_status_is_0_when_every_worker_drained() -> None:
    c = core()
    for i in (0, 1):
        c.started(i)
        c.ready(i, 0.0)
    c.exited(1, 5.0, -9)
    c.started(1)
    c.ready(1, 6.0)  # restarted and fine
    c.stop()
    c.exited(0, 7.0, 0)
    c.exited(1, 7.0, 0)
    assert c.exit_status() == 0 and c.all_ready_once
