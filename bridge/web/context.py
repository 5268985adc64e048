"""What the bridge's request handlers share, stored on the aiohttp application: the services
(opened before the app takes requests, bridge/web/services.py), the live calls, and how a call
opens its user's TTS and finds their telephony credentials (read at every call: a change in the
database, even by plain SQL, takes effect on the next call)."""

from __future__ import annotations

import contextlib
import dataclasses
import weakref
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from bridge.call.admission_core import Admission
from bridge.call.registry import CallRegistry
from bridge.call.speaker import Synthesize
from bridge.settings import PlivoSettings, Settings, TwilioSettings
from bridge.web.drain_core import Drain
from bridge.web.media_socket import MediaSocket
from bridge.web.read_coalescing import ReadCoalescing
from bridge.web.services import Services
from bridge.web.stream_tokens import StreamTokens


@dataclasses.dataclass
class BridgeContext:
    services: Services
    registry: CallRegistry
    stream_tokens: StreamTokens
    admission: Admission
    drain: Drain  # from the first SIGTERM on: not ready, new calls refused (bridge/web/drain.py)
    read_coalescing: ReadCoalescing  # the media sockets' shared sweep
    sockets: weakref.WeakSet[MediaSocket] = dataclasses.field(
        default_factory=weakref.WeakSet)

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def http(self) -> aiohttp.ClientSession:
        return self.services.http

    def tts_opener(self, user_id: str) -> Callable[
            [], contextlib.AbstractAsyncContextManager[Synthesize]]:
        """How a call of `user_id` opens its TTS: that user's target, read when the call starts.
        The user is the call's owner (its signed path), never a field of the stream."""
        services = self.services

        @contextlib.asynccontextmanager
        async def open_tts() -> AsyncIterator[Synthesize]:
            target = await services.targets.for_user(user_id)
            async with services.pools.client(target) as client:
                yield client.synthesize

        return open_tts

    async def telephony_for_user(self, user_id: str) -> tuple[TwilioSettings, PlivoSettings]:
        """The user's own provider credentials where stored, else the bridge's."""
        twilio, plivo = self.settings.twilio, self.settings.plivo
        row = await self.services.store.telephony(user_id)
        if row is not None and row.twilio_auth_token:
            twilio = dataclasses.replace(twilio, account_sid=row.twilio_account_sid,
                                         auth_token=row.twilio_auth_token)
        if row is not None and row.plivo_auth_token:
            plivo = dataclasses.replace(plivo, auth_id=row.plivo_auth_id,
                                        auth_token=row.plivo_auth_token)
        return twilio, plivo


CONTEXT = web.AppKey("bridge_context", BridgeContext)


def context(request: web.Request) -> BridgeContext:
    return request.app[CONTEXT]
