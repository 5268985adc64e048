"""Each user's TTS target, resolved at every call from their row as stored now (a change, even
by plain SQL, applies on the next call), and the local TTS server that local mode speaks
through: a child process this shell starts on first need and stops at close.
The decisions are target_core.resolve; this module only reads rows and runs the child."""

from __future__ import annotations

import asyncio

from bridge.settings import SilmaSettings
from bridge.silma import protocol as p
from bridge.silma.local_server import LocalTTSServer
from bridge.silma.pools import PoolKey, TTSTarget
from bridge.silma.regions import RegionSelector
from bridge.silma.target_core import Local, resolve
from bridge.store import DEFAULT_USER_ID, SilmaCredentials, Store


class TTSTargets:
    def __init__(self, store: Store, silma: SilmaSettings, voice: p.SynthesizeRequest,
                 regions: RegionSelector) -> None:
        self._store = store
        self._silma = silma
        self._voice = voice
        self._regions = regions
        self._local: LocalTTSServer | None = None  # not started until a target needs it
        self._local_lock = asyncio.Lock()

    def _resolve(self, row: SilmaCredentials | None) -> TTSTarget | Local:
        return resolve(row, self._silma, self._voice, self._regions.choice())

    async def for_user(self, user_id: str) -> TTSTarget:
        """Where `user_id`'s speech comes from; a user without a row has the default user's."""
        row = await self._store.silma(user_id) or await self._store.silma(DEFAULT_USER_ID)
        resolved = self._resolve(row)
        if isinstance(resolved, Local):
            return resolved.at(await self._local_url())
        return resolved

    async def pool_keys_in_use(self) -> set[PoolKey]:
        """The pools some user's settings point at, from one read of every row (the sweep runs
        this every minute). Never starts the local server: while none runs, no local pool
        exists to keep."""
        keys: set[PoolKey] = set()
        for row in await self._store.silma_users():
            resolved = self._resolve(row)
            if isinstance(resolved, TTSTarget):
                keys.add(resolved.pool_key)
            elif self._silma.local_server_url:
                keys.add(resolved.at(self._silma.local_server_url).pool_key)
            elif self._local is not None:
                keys.add(resolved.at(self._local.url).pool_key)
        return keys

    async def _local_url(self) -> str:
        if self._silma.local_server_url:  # one another process runs (serve --workers N)
            return self._silma.local_server_url
        async with self._local_lock:
            if self._local is None or self._local.down:
                # First need, or the child was given up on after repeated failures: a fresh
                # server (on the old port, so pools still pointing there reconnect).
                server = LocalTTSServer(port=None if self._local is None else self._local.port)
                await server.start()
                self._local = server
        return self._local.url

    async def close(self) -> None:
        if self._local is not None:
            await self._local.stop()
