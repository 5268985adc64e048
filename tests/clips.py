"""Reference clips for cloned-voice requests (a WAV of the size a user's upload would have),
and a client speaking with one through a byte-counting proxy."""

from __future__ import annotations

import contextlib
import io
import wave
from collections.abc import AsyncIterator

import aiohttp
import numpy as np

from bridge.settings import PoolSettings
from bridge.silma import protocol as p
from bridge.silma.client import SilmaClient
from bridge.silma.endpoint import parse_endpoint
from bridge.silma.pool import SilmaPool
from bridge.tts_server.app import RunningServer
from tests.delay_proxy import DelayProxy


def reference_clip(seconds: float = 7.0, rate: int = 24000) -> bytes:
    """A 16-bit mono WAV of noise, `seconds` long (the TTS server takes it as a reference; the
    Piper engine does not clone, so its content does not matter, only its size and format)."""
    rng = np.random.default_rng(7)
    samples = (rng.standard_normal(int(seconds * rate)) * 3000).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())
    return out.getvalue()


@contextlib.asynccontextmanager
async def cloning_client(tts: RunningServer, http: aiohttp.ClientSession, clip: bytes
                         ) -> AsyncIterator[tuple[SilmaClient, DelayProxy, SilmaPool]]:
    """A client speaking with `clip`'s voice on a one-connection pool, through a proxy that
    counts the bytes it sends to `tts`."""
    proxy = DelayProxy("127.0.0.1", int(tts.url.rsplit(":", 1)[1]))
    port = await proxy.start()
    pool = SilmaPool(http, parse_endpoint(f"http://127.0.0.1:{port}"), api_key="",
                     limits=PoolSettings(size=1, warm=1, acquire_timeout_s=10.0,
                                         health_interval_s=60.0),
                     connect_timeout_s=2.0)
    await pool.start()
    try:
        await pool.wait_ready(1, timeout_s=5)
        voice = p.SynthesizeRequest(text="", reference_audio=clip, reference_text="A reference.")
        yield SilmaClient(pool.endpoint, pool, http, api_key="", voice=voice, timeout_s=20.0,
                          want_ulaw=True), proxy, pool
    finally:
        await pool.close()
        await proxy.close()
