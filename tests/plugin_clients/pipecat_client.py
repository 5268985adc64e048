"""SILMA's pipecat plugin in a real pipecat pipeline, against a v2 server (run in .venv-plugins).

    python pipecat_client.py BASE_URL API_KEY TEXT OUT_DIR

Runs the service the way pipecat's own tests run a processor (pipecat.tests.utils.run_test: a
pipeline, its worker and runner, a TTSSpeakFrame then an EndFrame), keeps the TTSAudioRawFrame
audio in OUT_DIR/pipecat.pcm (16-bit mono), then does the same with a wrong key. The plugin's
own defaults pick the model and voice (silma-tts-v2-msa, sarah). Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from pipecat.frames.frames import ErrorFrame, TTSAudioRawFrame, TTSSpeakFrame
from pipecat.tests.utils import run_test
from pipecat_silma import SilmaTTSService


async def speak(base_url: str, api_key: str, text: str) -> tuple[bytes, set[int], list[str]]:
    service = SilmaTTSService(api_key=api_key, base_url=base_url)
    down, up = await run_test(service, frames_to_send=[TTSSpeakFrame(text)], start_timeout=10.0)
    audio = [frame for frame in down if isinstance(frame, TTSAudioRawFrame)]
    errors = [frame.error for frame in (*down, *up) if isinstance(frame, ErrorFrame)]
    return b"".join(frame.audio for frame in audio), {f.sample_rate for f in audio}, errors


async def main(base_url: str, api_key: str, text: str, out: Path) -> dict[str, Any]:
    pcm, rates, errors = await speak(base_url, api_key, text)
    (out / "pipecat.pcm").write_bytes(pcm)
    refused_pcm, _, refused = await speak(base_url, "not-the-key", text)
    return {"pipecat": {"bytes": len(pcm), "rates": sorted(rates), "errors": errors},
            "wrong_key": {"bytes": len(refused_pcm), "errors": refused}}


if __name__ == "__main__":
    base, key, words, folder = sys.argv[1:5]
    print(json.dumps(asyncio.run(main(base, key, words, Path(folder)))))
