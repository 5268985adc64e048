"""Several TTS servers behind one target, on real servers (Piper) behind loopback proxies:
requests are spread over them, a server that goes away is ejected and the callers do not notice,
and it is taken back once its backoff has passed and it answers again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from bridge.settings import PoolSettings
from bridge.silma import protocol as p
from bridge.silma.client import SilmaClient
from bridge.silma.endpoint import parse_endpoints
from bridge.silma.fleet import Fleet
from bridge.silma.fleet_core import EJECT_S
from bridge.silma.pool import SilmaPool
from bridge.silma.retry_core import RetryPolicy
from tests.delay_proxy import DelayProxy
from tests.servers import make_settings, running_tts, silent_tts_server

SENTENCE = "Two servers share the work."


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def fleet_of(http: aiohttp.ClientSession, endpoints: str,
             clock: Callable[[], float] | None = None) -> Fleet:
    limits = PoolSettings(size=4, warm=2, acquire_timeout_s=1.0, health_interval_s=60.0,
                          backoff_base_s=0.05, backoff_max_s=0.5)
    return Fleet([SilmaPool(http, endpoint, api_key="", limits=limits, connect_timeout_s=1.0)
                  for endpoint in parse_endpoints(endpoints)], clock=clock)


def client_of(fleet: Fleet, http: aiohttp.ClientSession) -> SilmaClient:
    return SilmaClient(fleet.endpoint, fleet, http, api_key="", voice=p.SynthesizeRequest(text=""),
                       timeout_s=20.0, want_ulaw=True)


async def spoken(client: SilmaClient, steps: list[str] | None = None) -> int:
    on_step = steps.append if steps is not None else (lambda _: None)
    return sum([len(piece.data) async for piece in client.synthesize(SENTENCE, on_step)])


def served(fleet: Fleet) -> dict[str, int]:
    return {s["endpoint"]: s["requests_served"] for s in fleet.server_stats()}


async def test_requests_spread_over_the_servers_and_survive_one_going_away(tts, http):
    async with running_tts(make_settings()) as second:
        proxies = [DelayProxy("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
                   for server in (tts, second)]
        ports = [await proxy.start() for proxy in proxies]
        fleet = fleet_of(http, ", ".join(f"http://127.0.0.1:{port}" for port in ports))
        await fleet.start()
        try:
            await fleet.wait_ready(2, timeout_s=5)
            client = client_of(fleet, http)
            results = await asyncio.gather(*(spoken(client) for _ in range(8)))
            assert min(results) > 8000
            first, other = served(fleet).values()
            assert first > 0 and other > 0, served(fleet)  # both servers did some of the work
            # The first server goes away: its sockets drop and nothing listens there any more.
            await proxies[0].close()
            results = await asyncio.gather(*(spoken(client) for _ in range(8)))
            assert min(results) > 8000  # every request still spoken, by the other server
            gone = fleet.server_stats()[0]
            assert gone["ejected"] and gone["ejections"] >= 1
            assert gone["last_fault"] == "lost"
            assert fleet.capacity().concurrency == second.service.scheduler.concurrency
            health = await fleet.check_health()
            assert health["status"].startswith("unreachable")
            assert health["endpoint"] == f"http://127.0.0.1:{ports[0]}"
            assert [s["status"] for s in health["servers"]][1] == "ok"
        finally:
            await fleet.close()
            for proxy in proxies:
                await proxy.close()


async def test_an_ejected_server_is_asked_again_once_its_backoff_has_passed(tts, http):
    proxy = DelayProxy("127.0.0.1", int(tts.url.rsplit(":", 1)[1]))
    port = await proxy.start()
    first = f"ws://127.0.0.1:{port}/ws"
    now = [0.0]  # the fleet's clock, moved by hand past the backoff
    async with running_tts(make_settings()) as second:
        fleet = fleet_of(http, f"http://127.0.0.1:{port}, {second.url}", clock=lambda: now[0])
        await fleet.start()
        try:
            await fleet.wait_ready(2, timeout_s=5)
            client = client_of(fleet, http)
            await proxy.close()  # the first server is down: requests on it are lost
            for _ in range(4):
                assert await spoken(client) > 8000
            state = fleet.server_stats()[0]
            assert state["ejected"] and state["last_fault"] == "lost"
            before = served(fleet)[first]
            # It comes back; while ejected it gets nothing, after its backoff the next
            # requests go to it (the least loaded) and it serves them.
            port_again = await proxy.start(port=port)
            assert port_again == port
            await fleet.pools[first].wait_ready(1, timeout_s=5)  # its pool reconnected
            assert await spoken(client) > 8000
            assert served(fleet)[first] == before
            now[0] += EJECT_S[1]
            for _ in range(4):
                assert await spoken(client) > 8000
            assert served(fleet)[first] > before
            assert not fleet.server_stats()[0]["ejected"]
        finally:
            await fleet.close()
            await proxy.close()


async def test_a_stalled_server_is_left_at_the_first_audio_deadline_and_ejected(tts, http):
    async with silent_tts_server() as stalled:
        fleet = fleet_of(http, f"{stalled}, {tts.url}")
        await fleet.start()
        try:
            await fleet.wait_ready(2, timeout_s=5)
            client = SilmaClient(fleet.endpoint, fleet, http, api_key="",
                                 voice=p.SynthesizeRequest(text=""), timeout_s=20.0,
                                 want_ulaw=True,
                                 policy=RetryPolicy(first_audio_timeout_s=0.3))
            steps: list[str] = []
            # The turn gives the first request to the stalled server: it moves on at 0.3 s.
            audio = sum([len(piece.data) async for piece in
                         client.synthesize(SENTENCE, steps.append, urgent=True)])
            assert audio > 8000 and "retry:stall" in steps
            state = fleet.server_stats()[0]
            assert state["endpoint"] == stalled and state["ejected"]
            assert state["last_fault"] == "stall"
            steps.clear()
            assert await spoken(client, steps) > 8000  # straight to the server that answers
            assert not [s for s in steps if s.startswith("retry:")]
        finally:
            await fleet.close()
