"""The fleet's records and decisions, with no I/O: what a bridge tells Redis about itself and
its calls, how those records are read back (bounded: Redis is shared infrastructure, but a bad
record must not break a request), and where a control request for a call is answered.

Redis keys (all under one prefix, so a database can be shared with other tools):
    {p}instances              set of instance ids that registered
    {p}instance:{id}          the instance's record (JSON), expiring after ttl_s: the heartbeat
                              renews it, so a bridge that died without leaving is gone soon
    {p}calls:{id}             set of the call ids that instance holds
    {p}call:{call_id}         the call's owner record (JSON): instance, user, start
    {p}trace:{call_id}        an ended call's trace (JSON), kept trace_ttl_s
    {p}recent                 sorted set of ended call ids by end time (newest kept)
    {p}settings               pub/sub channel: a user's settings changed (the message: user id)
    {p}events                 pub/sub channel: fleet events as JSON, {"event": "call_lost", ...}
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

PREFIX = "bridge:"
SETTINGS_CHANNEL = PREFIX + "settings"
EVENTS_CHANNEL = PREFIX + "events"
INSTANCES = PREFIX + "instances"
RECENT = PREFIX + "recent"
MAX_RECORD_BYTES = 64 * 1024  # an owner or instance record is under 1 KB
MAX_TRACE_BYTES = 2 * 1024 * 1024  # a trace is bounded by the tracer (200 utterances)
MAX_RECENT = 500
MAX_ID_CHARS = 200


def instance_key(instance_id: str) -> str:
    return f"{PREFIX}instance:{instance_id}"


def calls_key(instance_id: str) -> str:
    return f"{PREFIX}calls:{instance_id}"


def call_key(call_id: str) -> str:
    return f"{PREFIX}call:{call_id}"


def trace_key(call_id: str) -> str:
    return f"{PREFIX}trace:{call_id}"


@dataclasses.dataclass(frozen=True, slots=True)
class Instance:
    """What a bridge says of itself in the registry."""

    id: str
    url: str  # where the other bridges reach its control API (internal network)
    region: str = ""
    live_calls: int = 0
    max_calls: int = 0  # its admission limit; 0 = none set
    draining: bool = False
    waiting: int = 0  # its calls waiting for first words now: load on the shared TTS


@dataclasses.dataclass(frozen=True, slots=True)
class CallOwner:
    """Which bridge holds a live call, and whose call it is."""

    call_id: str
    instance: str
    owner: str  # the user the call belongs to
    started_at: float


class BadRecord(ValueError):
    """A record in Redis that is not one of ours: treated as absent, and logged by the shell."""


def encode(record: Instance | CallOwner) -> bytes:
    return orjson.dumps(dataclasses.asdict(record))


def _load(raw: bytes | str | None, limit: int) -> dict[str, Any] | None:
    if raw is None:
        return None
    if len(raw) > limit:
        raise BadRecord(f"a {len(raw)}-byte record, over {limit}")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRecord("not JSON") from None
    if not isinstance(value, dict):
        raise BadRecord("not a JSON object")
    return value


def _text(value: dict[str, Any], key: str, *, required: bool = True) -> str:
    field = value.get(key, None if required else "")
    if not isinstance(field, str) or (required and not field) or len(field) > 2048:
        raise BadRecord(f"{key} is not a string")
    return field


def _count(value: dict[str, Any], key: str) -> int:
    field = value.get(key, 0)
    if type(field) is not int or not 0 <= field <= 1_000_000:
        raise BadRecord(f"{key} is not a count")
    return field


def decode_instance(raw: bytes | str | None) -> Instance | None:
    value = _load(raw, MAX_RECORD_BYTES)
    if value is None:
        return None
    draining = value.get("draining", False)
    if not isinstance(draining, bool):
        raise BadRecord("draining is not true or false")
    return Instance(_text(value, "id"), _text(value, "url"), _text(value, "region",
                                                                   required=False),
                    _count(value, "live_calls"), _count(value, "max_calls"), draining,
                    _count(value, "waiting"))


def others_waiting(instances: list[Instance], me: str) -> int:
    """Calls the other bridges have waiting for first words: what a new call here queues
    behind on the TTS servers the fleet shares (admission_core's `waiting`)."""
    return sum(i.waiting for i in instances if i.id != me)


def decode_owner(raw: bytes | str | None) -> CallOwner | None:
    value = _load(raw, MAX_RECORD_BYTES)
    if value is None:
        return None
    started = value.get("started_at", 0.0)
    if isinstance(started, bool) or not isinstance(started, int | float):
        raise BadRecord("started_at is not a number")
    return CallOwner(_text(value, "call_id"), _text(value, "instance"), _text(value, "owner"),
                     float(started))


def decode_trace(raw: bytes | str | None) -> dict[str, Any] | None:
    value = _load(raw, MAX_TRACE_BYTES)
    if value is not None and not isinstance(value.get("owner"), str):
        raise BadRecord("a trace without its owner")
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class Local:
    """Answer here: the call is this bridge's (or unknown to the fleet)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Forward:
    """Ask the bridge that holds the call."""

    url: str


@dataclasses.dataclass(frozen=True, slots=True)
class Gone:
    """The call's bridge is gone from the registry: the call is over (its sweep files it)."""


Route = Local | Forward | Gone


def route(owner: CallOwner | None, owner_instance: Instance | None, *, me: str,
          may_see: bool, forwarded: bool) -> Route:
    """Where a control request for a call not live here is answered. `may_see`: the viewer
    may see the owner's calls (the same rule as locally: an invisible call is unknown, so its
    existence never leaks); `forwarded`: the request already came from another bridge, which
    is never bounced on (no loops)."""
    if owner is None or not may_see or owner.instance == me or forwarded:
        return Local()
    if owner_instance is None:
        return Gone()
    return Forward(owner_instance.url)


def lost_call_trace(owner: CallOwner, now: float) -> dict[str, Any]:
    """What the fleet files for a call whose bridge died without ending it."""
    return {"call_id": owner.call_id, "owner": owner.owner, "started_at": owner.started_at,
            "ended_at": now, "live": False, "end_reason": "bridge lost",
            "instance": owner.instance, "utterance_traces": []}
