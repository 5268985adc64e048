"""This bridge as a member of a fleet sharing one Redis: its record and heartbeat, its calls'
ownership, ended calls' traces, settings changes from the others, and the sweep that files the
calls of a bridge that died. The records and decisions are core.py's; this module does I/O.

Redis failing never fails a call: writes run in the background (logged and counted when they
fail, the heartbeat rewrites what matters), and reads that fail make a control request answer
as if the fleet were a fleet of one. The heartbeat and the settings listener are supervised:
each failure is logged with its reason and the loop goes on after a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, cast

import orjson
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from bridge.fleet import core
from bridge.fleet.core import CallOwner, Instance

log = structlog.get_logger("bridge.fleet")

RETRY_BACKOFF_S = (0.5, 10.0)
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class FleetTiming:
    heartbeat_s: float = 2.0
    ttl_s: float = 6.0  # an instance not heard of this long is gone
    trace_ttl_s: float = 86_400.0


class Membership:
    def __init__(self, client: aioredis.Redis, me: Instance, timing: FleetTiming) -> None:
        self._redis = client
        self.me = me
        self._timing = timing
        self._live: dict[str, CallOwner] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.on_settings_changed: Callable[[str], Awaitable[None]] | None = None
        self.write_failures = 0
        self.heartbeats = 0
        self.calls_lost = 0  # filed by this bridge's sweep for members that died
        # This bridge's calls waiting for first words (the registry's count), published each
        # beat; the others' sum, read back each beat, is what admission adds to its own.
        self.waiting_now: Callable[[], int] = lambda: 0
        self.others_waiting = 0
        self.lost_filed = asyncio.Event()  # set when the sweep files one

    @classmethod
    def connect(cls, url: str, me: Instance, timing: FleetTiming) -> Membership:
        client = aioredis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        return cls(client, me, timing)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Register now (a bad URL or a Redis that is down fails the start: an operator who set
        BRIDGE_REDIS_URL wants a fleet, not a silent island), then keep the record fresh."""
        await self._beat()
        self._tasks = [asyncio.create_task(self._supervised("heartbeat", self._heartbeat)),
                       asyncio.create_task(self._supervised("settings", self._listen))]

    async def stop(self) -> None:
        """Leave the registry: the others stop routing here at once."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.write_settled()
        with contextlib.suppress(RedisError, OSError):  # leaving; the TTL does it otherwise
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(core.instance_key(self.me.id))
                pipe.srem(core.INSTANCES, self.me.id)
                await pipe.execute()
        await self._redis.aclose()

    async def write_settled(self) -> None:
        """Until the writes started so far are done (tests; a drain before it leaves)."""
        await asyncio.gather(*self._writes, return_exceptions=True)

    async def abandon(self) -> None:
        """Stop without leaving, as a killed bridge does: the others find out by the TTL."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._redis.aclose()

    def set_draining(self) -> None:
        self.me = dataclasses.replace(self.me, draining=True)
        self._write("draining", self._beat())

    # -- calls -------------------------------------------------------------------------------
    def call_started(self, call_id: str, owner: str) -> None:
        record = CallOwner(call_id, self.me.id, owner, round(time.time(), 3))
        self._live[call_id] = record

        async def write() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(core.call_key(call_id), core.encode(record))
                pipe.sadd(core.calls_key(self.me.id), call_id)
                await pipe.execute()

        self._write("call_started", write())

    def call_ended(self, call_id: str, trace: dict[str, Any]) -> None:
        self._live.pop(call_id, None)
        self._write("call_ended", self._file(call_id, trace, owned_by=self.me.id))

    async def _file(self, call_id: str, trace: dict[str, Any], *, owned_by: str) -> None:
        """The trace kept for the fleet, the call's ownership dropped, in one transaction."""
        ended = time.time()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(core.trace_key(call_id), orjson.dumps(trace),
                     ex=int(self._timing.trace_ttl_s))
            pipe.zadd(core.RECENT, {call_id: ended})
            pipe.zremrangebyrank(core.RECENT, 0, -core.MAX_RECENT - 1)
            pipe.delete(core.call_key(call_id))
            pipe.srem(core.calls_key(owned_by), call_id)
            await pipe.execute()

    # -- reads (None / empty when Redis cannot say) ------------------------------------------
    async def owner_of(self, call_id: str) -> CallOwner | None:
        return await self._read(core.call_key(call_id), core.decode_owner)

    async def instance(self, instance_id: str) -> Instance | None:
        return await self._read(core.instance_key(instance_id), core.decode_instance)

    async def ended_trace(self, call_id: str) -> dict[str, Any] | None:
        return await self._read(core.trace_key(call_id), core.decode_trace)

    async def instances(self) -> list[Instance]:
        """The live members, this one included (one round trip for all their records)."""
        try:
            ids = sorted(await self._members(core.INSTANCES))[:1000]
        except (RedisError, OSError) as exc:
            log.warning("fleet_read_failed", what="instances", error=str(exc)[:200])
            return []
        return await self._read_many([core.instance_key(i) for i in ids], core.decode_instance)

    async def recent(self, limit: int) -> list[dict[str, Any]]:
        """Ended calls' traces, newest first, as every bridge filed them."""
        try:
            ids = await self._redis.zrevrange(core.RECENT, 0, limit - 1)
        except (RedisError, OSError) as exc:
            log.warning("fleet_read_failed", what="recent", error=str(exc)[:200])
            return []
        return await self._read_many([core.trace_key(i.decode()) for i in ids],
                                     core.decode_trace)

    async def _read_many(self, keys: list[str], decode: Callable[[bytes | None], T | None]
                         ) -> list[T]:
        """The records at `keys` that are there and well formed, in order, in one MGET."""
        if not keys:
            return []
        try:
            raws = await self._redis.mget(keys)
        except (RedisError, OSError) as exc:
            log.warning("fleet_read_failed", what=keys[0][:100], error=str(exc)[:200])
            return []
        found = []
        for key, raw in zip(keys, raws, strict=True):
            try:
                record = decode(raw)
            except core.BadRecord as exc:
                log.warning("fleet_record_refused", key=key[:100], reason=str(exc))
                continue
            if record is not None:
                found.append(record)
        return found

    async def _members(self, key: str) -> list[str]:
        # redis-py types its commands for both its sync and async clients.
        members = await cast("Awaitable[set[bytes]]", self._redis.smembers(key))
        return [m.decode(errors="replace") for m in members]

    async def _read(self, key: str, decode: Callable[[bytes | None], T]) -> T | None:
        try:
            return decode(await self._redis.get(key))
        except (RedisError, OSError) as exc:
            log.warning("fleet_read_failed", key=key[:100], error=str(exc)[:200])
        except core.BadRecord as exc:
            log.warning("fleet_record_refused", key=key[:100], reason=str(exc))
        return None

    # -- settings ----------------------------------------------------------------------------
    async def settings_changed(self, user_id: str) -> None:
        """Tell the other bridges (they retire the pools no setting points at any more)."""
        try:
            await self._redis.publish(core.SETTINGS_CHANNEL, user_id.encode())
        except (RedisError, OSError) as exc:
            self.write_failures += 1
            log.warning("fleet_publish_failed", error=str(exc)[:200])

    async def _listen(self) -> None:
        async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(core.SETTINGS_CHANNEL)
            async for message in pubsub.listen():
                data = message.get("data")
                if isinstance(data, bytes) and len(data) <= core.MAX_ID_CHARS \
                        and self.on_settings_changed is not None:
                    await self.on_settings_changed(data.decode(errors="replace"))

    # -- heartbeat and sweep -----------------------------------------------------------------
    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._timing.heartbeat_s)  # the period itself: nothing to wait on
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                # Redis away: the next beat tries again at the same pace (a growing backoff
                # would outlast the TTL, and the others would file this bridge's live calls).
                self.write_failures += 1
                log.warning("fleet_heartbeat_failed", error=str(exc)[:200])

    async def refresh(self) -> None:
        """One beat: this bridge's record renewed, dead members' calls filed, the others'
        load read back."""
        await self._beat()
        await self._sweep()
        self.others_waiting = core.others_waiting(await self.instances(), self.me.id)

    async def _beat(self) -> None:
        me = dataclasses.replace(self.me, live_calls=len(self._live),
                                 waiting=self.waiting_now())
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(core.instance_key(me.id), core.encode(me),
                     px=int(self._timing.ttl_s * 1000))
            pipe.sadd(core.INSTANCES, me.id)
            # Rewritten every beat: a call_started write that failed is repaired here.
            for record in self._live.values():
                pipe.set(core.call_key(record.call_id), core.encode(record))
            if self._live:
                pipe.sadd(core.calls_key(me.id), *self._live)
            await pipe.execute()
        self.heartbeats += 1

    async def _sweep(self) -> None:
        """File the calls of members whose record expired (they died without leaving): each
        once, by whichever bridge removes its ownership first."""
        ids = await self._members(core.INSTANCES)
        for instance_id in ids:
            if instance_id == self.me.id or await self._redis.exists(
                    core.instance_key(instance_id)):
                continue
            for call_id in await self._members(core.calls_key(instance_id)):
                owner = await self.owner_of(call_id)
                if owner is not None and await self._redis.delete(core.call_key(call_id)):
                    await self._file(call_id, core.lost_call_trace(owner, time.time()),
                                     owned_by=instance_id)
                    self.calls_lost += 1
                    self.lost_filed.set()
                    log.warning("fleet_call_lost", call_id=call_id, instance=instance_id)
                    await self._redis.publish(core.EVENTS_CHANNEL, orjson.dumps(
                        {"event": "call_lost", "call_id": call_id, "instance": instance_id}))
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(core.calls_key(instance_id))
                pipe.srem(core.INSTANCES, instance_id)
                await pipe.execute()
            log.warning("fleet_instance_lost", instance=instance_id)

    # -- supervision -------------------------------------------------------------------------
    def _write(self, what: str, job: Coroutine[Any, Any, None]) -> None:
        async def guarded() -> None:
            try:
                await job
            except (RedisError, OSError) as exc:  # the heartbeat repairs ownership later
                self.write_failures += 1
                log.warning("fleet_write_failed", what=what, error=str(exc)[:200])

        task = asyncio.get_running_loop().create_task(guarded())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _supervised(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        backoff = RETRY_BACKOFF_S[0]
        while True:
            try:
                await loop()
                return
            except Exception as exc:  # the task root: logged with its reason, then again
                if (me := asyncio.current_task()) is not None and me.cancelling():
                    raise asyncio.CancelledError from exc  # stop()'s, made an error by redis
                log.warning("fleet_task_failed", task=name, error=f"{type(exc).__name__}: "
                            f"{exc}"[:300], retry_in_s=backoff)
                await asyncio.sleep(backoff)  # the backoff itself
                backoff = min(RETRY_BACKOFF_S[1], backoff * 2)
