"""SILMA's livekit plugin as a LiveKit agent uses it, against a v2 server (run in .venv-plugins).

    python livekit_client.py BASE_URL API_KEY TEXT OUT_DIR

Speaks TEXT with `tts.synthesize` (HTTP /stream) into OUT_DIR/http.pcm and with `tts.stream()`
(push_text, end_input: the WebSocket) into OUT_DIR/ws.pcm, 16-bit mono, then tries both with a
wrong key. Prints one JSON line: sample rates, byte counts, and how each refusal was raised.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
from livekit.agents import APIStatusError, tts
from livekit.plugins import silma


async def collect(stream: tts.ChunkedStream | tts.SynthesizeStream) -> tuple[bytes, set[int]]:
    pcm, rates = bytearray(), set()
    async with stream:
        async for audio in stream:
            pcm += audio.frame.data.tobytes()
            rates.add(audio.frame.sample_rate)
    return bytes(pcm), rates


def streamed(engine: silma.TTS, text: str) -> tts.SynthesizeStream:
    stream = engine.stream()
    for word in text.split():  # as an LLM's tokens arrive
        stream.push_text(word + " ")
    stream.end_input()
    return stream


async def refusal(make: Any) -> dict[str, Any]:
    try:
        await collect(make())
    except APIStatusError as exc:
        return {"error": type(exc).__name__, "status": exc.status_code,
                "retryable": exc.retryable}
    return {"error": None}


async def main(base_url: str, api_key: str, text: str, out: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        engine = silma.TTS(api_key=api_key, base_url=base_url, http_session=session,
                           model="silma-tts-v2-english", voice="default")
        for name, stream in (("http", lambda: engine.synthesize(text)),
                             ("ws", lambda: streamed(engine, text))):
            pcm, rates = await collect(stream())
            (out / f"{name}.pcm").write_bytes(pcm)
            result[name] = {"bytes": len(pcm), "rates": sorted(rates)}
        await engine.aclose()
        wrong = silma.TTS(api_key="not-the-key", base_url=base_url, http_session=session,
                          model="silma-tts-v2-english", voice="default")
        result["wrong_key_http"] = await refusal(lambda: wrong.synthesize(text))
        result["wrong_key_ws"] = await refusal(lambda: streamed(wrong, text))
        await wrong.aclose()
    return result


if __name__ == "__main__":
    base, key, words, folder = sys.argv[1:5]
    print(json.dumps(asyncio.run(main(base, key, words, Path(folder)))))
