"""Bridges in a fleet on the real Redis and PostgreSQL of this machine: a call held by one
bridge is controlled through another (say, trace, hang-up), the calls list is the fleet's, a
tenant still sees only their own calls, a settings change on one bridge retires the pools on
the other, and the calls of a bridge that died are filed as ended by the others."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from bridge.emulator.twilio_wire import TwilioCallEmulator, fetch_twiml
from bridge.fleet.core import EVENTS_CHANNEL, Instance
from bridge.fleet.forward import ROUTED_TO
from bridge.fleet.membership import FleetTiming, Membership
from bridge.settings import FleetSettings, Settings
from bridge.store.crypto import generate_key
from bridge.tts_server.app import RunningServer
from tests.postgres import pg_schema
from tests.servers import (
    DEFAULT_TOKEN,
    RunningBridge,
    make_settings,
    running_bridge,
    running_tts,
    wait_ended,
)

REDIS_URL = "redis://127.0.0.1:6379/13"  # a database of its own, emptied around each test
AUTH = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
WAIT_S = 20.0
TIMING = FleetSettings(heartbeat_s=0.2, ttl_s=1.0)


@pytest.fixture
async def redis_db() -> AsyncIterator[str]:
    client = aioredis.from_url(REDIS_URL)
    await client.flushdb()
    yield REDIS_URL
    await client.flushdb()
    await client.aclose()


def fleet_settings(instance: str, secret: str) -> Settings:
    base = make_settings()
    return base.replace(
        redis_url=REDIS_URL, secret_key=secret,
        fleet=dataclasses.replace(TIMING, instance_id=instance),
        silma=dataclasses.replace(base.silma, allow_private_endpoints=True))


@contextlib.asynccontextmanager
async def two_bridges(tts: RunningServer) -> AsyncIterator[tuple[RunningBridge, RunningBridge]]:
    secret = generate_key()  # shared: sessions and stored secrets are the fleet's
    async with pg_schema() as database, \
            running_bridge(fleet_settings("a", secret), tts_url=tts.url,
                           database_url=database) as a, \
            running_bridge(fleet_settings("b", secret), tts_url=tts.url,
                           database_url=database) as b:
        yield a, b


@contextlib.asynccontextmanager
async def call_on(bridge_url: str, http: aiohttp.ClientSession, call_sid: str
                  ) -> AsyncIterator[TwilioCallEmulator]:
    stream_url, params = await fetch_twiml(http, f"{bridge_url}/twilio/voice",
                                           {"CallSid": call_sid}, None)
    async with TwilioCallEmulator(http, stream_url, call_sid=call_sid,
                                  parameters=params) as call:
        await call.connect(greetings=1)
        yield call


async def test_a_call_on_one_bridge_is_controlled_through_the_other(
        tts: RunningServer, redis_db: str) -> None:
    async with two_bridges(tts) as (a, b), aiohttp.ClientSession() as http:
        async with call_on(a.url, http, "CAfleet1") as call:
            heard = call.marks_settled
            async with http.post(f"{b.url}/calls/CAfleet1/say", json={"text": "Routed."},
                                 headers=AUTH) as said:
                assert said.status == 202, await said.text()
                assert said.headers[ROUTED_TO] == a.url
            async with asyncio.timeout(WAIT_S):
                await call.wait_for_marks(heard + 1)  # the caller heard the routed say
            async with http.get(f"{b.url}/calls", headers={**AUTH,
                                                           "Accept": "application/json"}) as r:
                listed = await r.json()
            assert [(c["call_id"], c.get("bridge")) for c in listed["live"]] == [
                ("CAfleet1", "a")]
            async with http.get(f"{b.url}/calls/CAfleet1/trace", headers=AUTH) as r:
                live_trace = await r.json()
            assert live_trace["live"] is True and live_trace["utterances"] == 2
            async with http.post(f"{b.url}/calls/CAfleet1/hangup", headers=AUTH) as r:
                assert r.status == 200 and (await r.json())["status"] == "ended"
            ended = await wait_ended(a, "CAfleet1")
        assert ended["end_reason"] == "hangup"
        # Ended: the trace comes from the fleet's store on the bridge that never held it.
        fleet_a, fleet_b = a.context.services.fleet, b.context.services.fleet
        assert fleet_a is not None and fleet_b is not None
        await fleet_a.write_settled()
        shared = await fleet_b.ended_trace("CAfleet1")
        assert shared is not None and shared["owner"] == "default"
        async with http.get(f"{b.url}/calls/CAfleet1/trace", headers=AUTH) as r:
            assert r.status == 200 and ROUTED_TO not in r.headers
            assert (await r.json())["end_reason"] == shared["end_reason"] == "hangup"


async def test_another_tenant_sees_nothing_of_it_through_any_bridge(
        tts: RunningServer, redis_db: str) -> None:
    async with two_bridges(tts) as (a, b), aiohttp.ClientSession() as http:
        _, token = await b.context.services.store.create_user("Mallory")
        mallory = {"Authorization": f"Bearer {token}"}
        async with call_on(a.url, http, "CAfleet2"):
            for method, path in (("POST", "say"), ("GET", "trace"), ("POST", "hangup")):
                async with http.request(method, f"{b.url}/calls/CAfleet2/{path}",
                                        json={"text": "Hi."}, headers=mallory) as r:
                    assert r.status == 404, (path, r.status)
                    assert ROUTED_TO not in r.headers  # never even asked of its owner
            async with http.get(f"{b.url}/calls", headers={**mallory,
                                                           "Accept": "application/json"}) as r:
                assert (await r.json())["live"] == []


async def test_a_settings_change_on_one_bridge_retires_the_pool_on_the_other(
        tts: RunningServer, redis_db: str) -> None:
    async with two_bridges(tts) as (a, b), running_tts(make_settings()) as other, \
            aiohttp.ClientSession() as http:
        heard = asyncio.Event()
        fleet_a = a.context.services.fleet
        assert fleet_a is not None and fleet_a.on_settings_changed is not None
        retire = fleet_a.on_settings_changed

        async def retired_then_told(user_id: str) -> None:
            await retire(user_id)
            heard.set()

        fleet_a.on_settings_changed = retired_then_told
        old = {s["endpoint"] for s in a.context.services.pools.stats()}
        assert len(old) == 1
        async with http.put(f"{b.url}/api/users/default/silma", headers=AUTH,
                            json={"api_endpoint": other.url}) as r:
            assert r.status == 200, await r.text()
        async with asyncio.timeout(WAIT_S):
            await heard.wait()
        # A's pool on the old server is gone: nothing points there any more.
        assert old.isdisjoint(s["endpoint"] for s in a.context.services.pools.stats())


async def test_each_bridge_sees_the_callers_the_others_have_waiting(
        tts: RunningServer, redis_db: str) -> None:
    async with two_bridges(tts) as (a, b):
        fleet_a, fleet_b = a.context.services.fleet, b.context.services.fleet
        assert fleet_a is not None and fleet_b is not None
        fleet_b.waiting_now = lambda: 9  # as if nine of B's callers waited for first words
        await fleet_b.refresh()
        await fleet_a.refresh()
        assert (fleet_a.others_waiting, fleet_b.others_waiting) == (9, 0)
        fleet_b.set_draining()  # what the drain does at the first SIGTERM
        await fleet_b.write_settled()
        seen = await fleet_a.instance("b")
        assert seen is not None and seen.draining and seen.waiting == 9


async def test_the_calls_of_a_bridge_that_died_are_filed_as_ended(
        tts: RunningServer, redis_db: str) -> None:
    async with two_bridges(tts) as (a, b), aiohttp.ClientSession() as http:
        # A third member that registers a call, then dies without leaving (its heartbeat stops:
        # what kill -9 leaves behind).
        ghost = Membership.connect(REDIS_URL, Instance("ghost", "http://127.0.0.1:9"),
                                   FleetTiming(heartbeat_s=0.2, ttl_s=1.0))
        await ghost.start()
        ghost.call_started("CAghost", "default")
        await ghost.write_settled()
        await ghost.abandon()
        fleets = [a.context.services.fleet, b.context.services.fleet]
        async with asyncio.timeout(WAIT_S):
            await asyncio.wait([asyncio.ensure_future(f.lost_filed.wait())
                                for f in fleets if f is not None],
                               return_when=asyncio.FIRST_COMPLETED)
        assert sum(f.calls_lost for f in fleets if f is not None) == 1  # filed once
        async with http.get(f"{a.url}/calls/CAghost/trace", headers=AUTH) as r:
            assert r.status == 200
            assert (await r.json())["end_reason"] == "bridge lost"
        fleet_b = b.context.services.fleet
        assert fleet_b is not None and [i.id for i in await fleet_b.instances()] == ["a", "b"]


# -- real processes: `python -m bridge serve` twice, one of them killed ---------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def bridge_process(instance: str, tts_url: str, database: str, secret: str,
                         data: Path) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """A bridge process in the fleet, once it says it listens; killed at the end if alive."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "BRIDGE_PORT": str(port), "BRIDGE_PUBLIC_URL": url,
           "BRIDGE_DATABASE_URL": database, "BRIDGE_SECRET_KEY": secret,
           "BRIDGE_DEFAULT_USER_TOKEN": DEFAULT_TOKEN, "BRIDGE_SILMA_ENDPOINT": tts_url,
           "BRIDGE_ALLOW_UNSIGNED_WEBHOOKS": "true", "BRIDGE_REDIS_URL": REDIS_URL,
           "BRIDGE_FLEET_INSTANCE_ID": instance, "BRIDGE_FLEET_INTERNAL_URL": url,
           "BRIDGE_FLEET_HEARTBEAT_S": "0.2", "BRIDGE_FLEET_TTL_S": "1.0",
           "BRIDGE_LOG_LEVEL": "warning"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "serve", cwd=data, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert process.stderr is not None
    reader: asyncio.Future[bytes] | None = None
    try:
        async with asyncio.timeout(WAIT_S):
            while b"bridge listening on" not in (line := await process.stderr.readline()):
                assert line, "the bridge exited before it listened"
        reader = asyncio.ensure_future(process.stderr.read())  # never let its pipe fill
        yield url, process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        if reader is not None:
            await reader


async def test_kill_9_of_a_bridge_files_its_live_call_as_ended_on_the_other(
        tts: RunningServer, redis_db: str, tmp_path: Path) -> None:
    secret = generate_key()
    events = aioredis.from_url(REDIS_URL).pubsub(ignore_subscribe_messages=True)
    await events.subscribe(EVENTS_CHANNEL)
    async with pg_schema() as database, \
            bridge_process("a", tts.url, database, secret, tmp_path) as (a_url, a), \
            bridge_process("b", tts.url, database, secret, tmp_path) as (b_url, _), \
            aiohttp.ClientSession() as http:
        async with call_on(a_url, http, "CAkill9") as call:
            heard = call.marks_settled
            async with http.post(f"{b_url}/calls/CAkill9/say", json={"text": "Still here."},
                                 headers=AUTH) as said:
                assert said.status == 202 and said.headers[ROUTED_TO] == a_url
            async with asyncio.timeout(WAIT_S):
                await call.wait_for_marks(heard + 1)
            a.kill()  # SIGKILL: no drain, no leaving the registry
            await a.wait()
            async with asyncio.timeout(WAIT_S):
                message = await next_message(events)
        assert orjson.loads(message) == {"event": "call_lost", "call_id": "CAkill9",
                                         "instance": "a"}
        async with http.get(f"{b_url}/calls/CAkill9/trace", headers=AUTH) as r:
            assert r.status == 200
            assert (await r.json())["end_reason"] == "bridge lost"
        async with http.get(f"{b_url}/calls", headers={**AUTH,
                                                       "Accept": "application/json"}) as r:
            listed = await r.json()
        assert listed["live"] == [] and listed["recent"][0]["call_id"] == "CAkill9"
    await events.aclose()


async def next_message(pubsub: PubSub) -> bytes:
    async for message in pubsub.listen():
        data = message["data"]
        assert isinstance(data, bytes)
        return data
    raise AssertionError("the subscription ended")


async def test_a_failed_heartbeat_is_retried_at_the_same_pace(redis_db: str) -> None:
    member = Membership.connect(REDIS_URL, Instance("solo", "http://127.0.0.1:9"),
                                FleetTiming(heartbeat_s=0.05, ttl_s=1.0))
    await member.start()
    refresh, beat_again = member.refresh, asyncio.Event()
    failed: list[bool] = []

    async def once_failing() -> None:  # Redis away for one beat
        if not failed:
            failed.append(True)
            raise RedisError("Connection reset by peer")
        await refresh()
        beat_again.set()

    member.refresh = once_failing  # type: ignore[method-assign]
    async with asyncio.timeout(WAIT_S):
        await beat_again.wait()  # the very next beat, not after a backoff past the TTL
    assert member.write_failures == 1
    seen = await member.instance("solo")
    assert seen is not None
    await member.stop()
