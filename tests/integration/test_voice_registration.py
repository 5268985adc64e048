"""Voice registration on the real TTS server: the clip crosses the wire once per connection, then
requests name it by id; a server that forgot it gets it again, and the request still speaks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bridge.silma import protocol as p
from bridge.silma.client import SilmaClient
from tests.clips import cloning_client, reference_clip
from tests.servers import make_settings, running_tts

TEXT = "Registered voices travel once."


CLIP = reference_clip()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def spoken_bytes(client: SilmaClient, text: str = TEXT) -> int:
    return sum([len(piece.data) async for piece in client.synthesize(text)])


async def test_the_clip_is_sent_once_per_connection_then_named_by_id(tts, http):
    async with cloning_client(tts, http, CLIP) as (client, proxy, pool):
        before = proxy.bytes_up
        assert await spoken_bytes(client) > 8000  # a second of mu-law, at least
        first = proxy.bytes_up - before
        assert first > len(CLIP)  # the clip went, base64 in a register_voice message
        sizes = []
        for _ in range(3):
            before = proxy.bytes_up
            assert await spoken_bytes(client) > 8000
            sizes.append(proxy.bytes_up - before)
        assert max(sizes) < 2000, sizes  # the voice id and the text only
        # Two requests at once on a fresh connection: one registers, the other waits for it.
        proxy.drop_all()
        await pool.wait_ready(1, timeout_s=5)
        before = proxy.bytes_up
        both = await asyncio.gather(spoken_bytes(client), spoken_bytes(client, "And again."))
        assert min(both) > 4000  # half a second of mu-law each
        assert len(CLIP) < proxy.bytes_up - before < 2 * len(CLIP)


async def test_a_server_that_forgot_the_voice_gets_it_again_and_still_speaks(http):
    async with running_tts(make_settings(max_voices=1)) as tts:
        async with cloning_client(tts, http, CLIP) as (client, proxy, _):
            assert await spoken_bytes(client) > 8000
            # Another voice takes the server's one place: ours is forgotten there.
            other = reference_clip(1.0)
            tts.service.register_voice(p.RegisterVoice(other, "another voice"))
            before = proxy.bytes_up
            assert await spoken_bytes(client) > 8000  # unknown_voice, registered, resent
            assert proxy.bytes_up - before > len(CLIP)
            assert len(tts.service.voices) == 1
