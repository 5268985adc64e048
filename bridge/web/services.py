"""The bridge's long-lived services, all built before the app takes a request and closed after
its listeners: the store, the HTTP sessions, the TTS pools, region probing, the users' TTS
targets (and the local TTS server behind them) and pronunciation lexicons, the speech to text
backend and the agent kind the calls share, and the background jobs that keep them fresh."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from redis.exceptions import RedisError

from bridge.agent.factory import AgentMaker, agent_maker
from bridge.agent.inprocess import AgentFactory
from bridge.call.lexicons import Lexicons
from bridge.errors import BridgeError, ConfigError
from bridge.fleet.core import Instance
from bridge.fleet.membership import FleetTiming, Membership
from bridge.settings import Settings, SilmaSettings
from bridge.silma import protocol as p
from bridge.silma.pools import PoolRegistry
from bridge.silma.regions import AUTO, REGIONS, RegionSelector
from bridge.silma.retry_core import RetryPolicy
from bridge.silma.targets import TTSTargets
from bridge.store import DEFAULT_USER_ID, Store
from bridge.stt.base import SpeechToText
from bridge.stt.factory import stt_backend
from bridge.web.url_guard import guarded_session

POOL_SWEEP_S = 60.0
log = structlog.get_logger("bridge.web")


@dataclasses.dataclass(frozen=True)
class Services:
    settings: Settings  # those the services were built from
    store: Store
    http: aiohttp.ClientSession
    pools: PoolRegistry
    regions: RegionSelector  # with no endpoints when the bridge has none (or its own endpoint)
    targets: TTSTargets
    lexicons: Lexicons  # each user's pronunciation overrides, compiled
    agents: AgentMaker  # each call's agent, of the kind checked at the start
    stt: SpeechToText | None = None  # the calls' speech to text; None: [stt] backend = none
    fleet: Membership | None = None  # None: no BRIDGE_REDIS_URL, a fleet of one

    @property
    def barge_in_words(self) -> int:
        """What a call's barge-in needs: 0, voice activity; n, n words of its transcripts."""
        stt = self.settings.stt
        return stt.barge_in_min_words if self.stt is not None and stt.barge_in == "words" else 0

    async def retire_unused_pools(self) -> None:
        """Close pools that no live call uses and no user's settings point at any more."""
        self.pools.retire_unused(await self.targets.pool_keys_in_use())

    async def settings_changed(self, user_id: str) -> None:
        """A user's settings were saved here: this bridge's unused pools retire now, and every
        other bridge's as soon as it hears (targets are read from the store at each call, so
        no bridge speaks with a stale key to a new call; this closes the old pools)."""
        await self.retire_unused_pools()
        if self.fleet is not None:
            await self.fleet.settings_changed(user_id)


def voice_of(silma: SilmaSettings) -> p.SynthesizeRequest:
    """The voice every request carries: reference clip and transcript, speed, seed."""
    reference = b""
    if silma.reference_audio:
        try:
            reference = Path(silma.reference_audio).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read BRIDGE_SILMA_REFERENCE_AUDIO: {exc}") from exc
    return p.SynthesizeRequest(text="", reference_audio=reference,
                               reference_text=silma.reference_text, speed=silma.speed,
                               seed=silma.seed)


def _check_regions(silma: SilmaSettings) -> None:
    unknown = set(silma.regions) - set(REGIONS)
    if unknown or (silma.region not in (AUTO, *REGIONS)):
        raise ConfigError(f"unknown SILMA region(s): {sorted(unknown) or silma.region}; "
                          f"known: {', '.join(REGIONS)}")


@contextlib.asynccontextmanager
async def open_services(settings: Settings, *, agent_factory: AgentFactory | None = None
                        ) -> AsyncIterator[Services]:
    """Every service open and the default user's pool warming; each closed on the way out.
    `agent_factory`: an embedding app's in-process agent (bridge/agent/inprocess.py), used
    instead of the configured agent kind."""
    silma = settings.silma
    _check_regions(silma)
    voice = voice_of(silma)
    tls = ssl.create_default_context(cafile=silma.ca_file) if silma.ca_file else True
    async with contextlib.AsyncExitStack() as stack:
        store = await Store.open(settings.database_url, settings.secret_key,
                                 default_user_token=settings.default_user_token)
        stack.push_async_callback(store.close)
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls, limit=0))
        stack.push_async_callback(http.close)
        # Checked before the pools, the fleet and the local TTS server: a bad agent kind or
        # speech to text backend stops the start here, with its setting named.
        agents = agent_maker(settings, http, factory=agent_factory)
        stt = stt_backend(settings.stt, http)
        if stt is not None:
            stack.push_async_callback(stt.aclose)  # before the session its requests use
        guarded = guarded_session(allow_private=silma.allow_private_endpoints, ssl=tls)
        stack.push_async_callback(guarded.close)
        # The bridge's own endpoint wins over its regions (target_core), so with one set
        # there is nothing to measure.
        regions = RegionSelector(http, {} if silma.endpoint else silma.regions, ssl_context=tls)
        targets = TTSTargets(store, silma, voice, regions)
        stack.push_async_callback(targets.close)
        pools = PoolRegistry(http, settings.pool, connect_timeout_s=silma.connect_timeout_s,
                             request_timeout_s=silma.request_timeout_s,
                             want_ulaw=silma.request_ulaw, ssl_context=tls,
                             guarded_session=guarded,
                             retry_policy=RetryPolicy(
                                 deadline_s=silma.retry_deadline_s,
                                 first_audio_timeout_s=silma.first_audio_timeout_s))
        stack.push_async_callback(pools.close)  # before the sessions and the local server
        fleet = await _join_fleet(settings, stack)
        services = Services(settings, store, http, pools, regions, targets, Lexicons(store),
                            agents, stt, fleet)
        if fleet is not None:
            fleet.on_settings_changed = lambda _user: services.retire_unused_pools()
        if regions.endpoints:
            await regions.measure()
            _in_background(stack, _every(silma.region_probe_interval_s, regions.measure))
        _in_background(stack, _every(POOL_SWEEP_S, services.retire_unused_pools))
        # Warm the default user's pool now, so the first call does not pay for connecting.
        await pools.pool_for(await targets.for_user(DEFAULT_USER_ID))
        yield services


async def _join_fleet(settings: Settings, stack: contextlib.AsyncExitStack
                      ) -> Membership | None:
    if not settings.redis_url:
        return None
    fleet = settings.fleet
    me = Instance(id=fleet.instance_id or f"{socket.gethostname()}-{os.getpid()}",
                  url=fleet.internal_url or f"http://{settings.host}:{settings.port}",
                  region=fleet.region, max_calls=settings.admission.max_calls)
    membership = Membership.connect(settings.redis_url, me, FleetTiming(
        fleet.heartbeat_s, fleet.ttl_s, fleet.trace_ttl_s))
    try:
        await membership.start()
    except (RedisError, OSError) as exc:
        raise ConfigError(f"cannot join the fleet at BRIDGE_REDIS_URL: {exc}") from exc
    stack.push_async_callback(membership.stop)
    log.info("fleet_joined", instance=me.id, url=me.url)
    return membership


def _in_background(stack: contextlib.AsyncExitStack, job: Coroutine[Any, Any, None]) -> None:
    stack.callback(asyncio.create_task(job).cancel)


async def _every(interval_s: float, job: Callable[[], Awaitable[object]]) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await job()
        except BridgeError as exc:  # a failed sweep or probe is retried at the next interval
            log.warning("background_job_failed", job=getattr(job, "__name__", "?"),
                        error=str(exc))
