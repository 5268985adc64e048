"""The fleet's records and routing decision, pure: round trips, bounded reads of whatever is in
Redis, and where each control request is answered."""

from __future__ import annotations

import orjson
import pytest

from bridge.fleet import core
from bridge.fleet.core import CallOwner, Forward, Gone, Instance, Local, route

ME, OTHER = "a", "b"
OWNER = CallOwner("CA1", OTHER, "ann", 1700000000.5)
OTHER_BRIDGE = Instance(OTHER, "http://10.0.0.2:8080", "eu-west", 3, 500)


def test_records_round_trip() -> None:
    assert core.decode_instance(core.encode(OTHER_BRIDGE)) == OTHER_BRIDGE
    assert core.decode_owner(core.encode(OWNER)) == OWNER
    assert core.decode_owner(None) is None and core.decode_instance(None) is None


@pytest.mark.parametrize("raw", [
    b"{", b"[1]", b'{"id": "a"}', b'{"id": "a", "url": 7}',
    b'{"id": "a", "url": "http://x", "live_calls": -1}',
    b'{"id": "a", "url": "http://x", "live_calls": true}',
    b'{"id": "a", "url": "http://x", "draining": "no"}',
    b"x" * (core.MAX_RECORD_BYTES + 1),
])
def test_a_bad_instance_record_is_refused(raw: bytes) -> None:
    with pytest.raises(core.BadRecord):
        core.decode_instance(raw)


@pytest.mark.parametrize("raw", [
    b'{"call_id": "CA1", "instance": "b"}',
    b'{"call_id": "CA1", "instance": "b", "owner": "ann", "started_at": "now"}',
    b'{"call_id": "", "instance": "b", "owner": "ann"}',
])
def test_a_bad_owner_record_is_refused(raw: bytes) -> None:
    with pytest.raises(core.BadRecord):
        core.decode_owner(raw)


def test_a_trace_must_name_its_owner() -> None:
    assert core.decode_trace(orjson.dumps({"owner": "ann", "call_id": "CA1"})) == {
        "owner": "ann", "call_id": "CA1"}
    with pytest.raises(core.BadRecord):
        core.decode_trace(orjson.dumps({"call_id": "CA1"}))


@pytest.mark.parametrize(("owner", "instance", "may_see", "forwarded", "expected"), [
    (OWNER, OTHER_BRIDGE, True, False, Forward("http://10.0.0.2:8080")),
    (None, None, True, False, Local()),  # unknown to the fleet
    (CallOwner("CA1", ME, "ann", 0.0), None, True, False, Local()),  # ours after all
    (OWNER, OTHER_BRIDGE, False, False, Local()),  # another tenant's: unknown, never asked
    (OWNER, OTHER_BRIDGE, True, True, Local()),  # came from a bridge: never bounced on
    (OWNER, None, True, False, Gone()),  # its bridge is gone
])
def test_where_a_control_request_is_answered(owner: CallOwner | None,
                                             instance: Instance | None, may_see: bool,
                                             forwarded: bool, expected: core.Route) -> None:
    assert route(owner, instance, me=ME, may_see=may_see, forwarded=forwarded) == expected


def test_a_lost_call_is_filed_for_its_owner() -> None:
    trace = core.lost_call_trace(OWNER, 1700000100.0)
    assert (trace["owner"], trace["end_reason"], trace["live"]) == ("ann", "bridge lost",
                                                                    False)
    assert core.decode_trace(orjson.dumps(trace)) == trace


def test_keys_share_one_prefix() -> None:
    keys = [core.instance_key("a"), core.calls_key("a"), core.call_key("CA1"),
            core.trace_key("CA1"), core.INSTANCES, core.RECENT, core.SETTINGS_CHANNEL,
            core.EVENTS_CHANNEL]
    assert all(key.startswith(core.PREFIX) for key in keys) and len(set(keys)) == len(keys)


def test_the_others_waiting_callers_count_against_a_new_call_here() -> None:
    fleet = [Instance(ME, "u", waiting=4), Instance(OTHER, "u", waiting=3),
             Instance("c", "u", waiting=2, draining=True)]
    # A draining bridge's waiting callers still queue on the shared TTS: they count.
    assert core.others_waiting(fleet, ME) == 5
