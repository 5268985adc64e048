#!/usr/bin/env python3
"""Benchmark the silma engine: time to first chunk and real-time factor at several concurrencies.

Writes a SILMA model of the released size with random weights (the compute of a forward pass
does not depend on the weights' values), loads it through the engine's real loading code, and
sends N replies at once, N = 1, 4, 16, first one chunk per pass of the model (max batch 1),
then with concurrent chunks batched (max batch 8), side by side. Each reply has a seed of its own:
chunks with different seeds, texts and lengths share a pass, each computed as it is alone (the
model's `exact_batching`). Then, at the model itself, one pass of N chunks against the same N
chunks one pass each (each max batch N > 1): what a batched pass costs or saves apart from the
engine's scheduling. Also measures what the voice-registration extension saves per request
(bytes on the wire, server time to take the clip in).

    python scripts/bench_silma_gpu.py                      # CUDA, full size (a GPU host)
    python scripts/bench_silma_gpu.py --device cpu --tiny  # any machine, seconds

Needs the [silma] extra. Prints one table; not a test (no assertions on timings).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# The repo root: the benchmark's test helpers live in tests/, which is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.audio.codec import encode_audio
from bridge.settings import TTSServerSettings
from bridge.silma.protocol import RegisterVoice, SynthesizeRequest
from bridge.tts_server.engines.base import Utterance
from bridge.tts_server.engines.silma import SilmaConfig, SilmaEngine
from bridge.tts_server.engines.silma.model import SamplingConfig, SilmaModel, SpeechItem, load_model
from bridge.tts_server.service import TTSService
from tests.random_model import write_random_model

REPLY = (
    "Thank you for calling, I can help with that. Your appointment is confirmed for Tuesday "
    "morning at ten thirty. Is there anything else I can do for you today?"
)
REFERENCE_TEXT = (
    "Hello, this is the voice that the agent should use when it speaks to callers on the phone."
)
REFERENCE_S = 7.0  # a typical reference clip: ~90 characters at a calm pace
SEED = 42  # the bridge's default (BRIDGE_SILMA_SEED); reply n gets SEED + n


def reference_clip(rate: int = 24000) -> np.ndarray:
    """Syllable-rate noise bursts: trims and times like speech (the weights are random anyway)."""
    rng = np.random.default_rng(0)
    n = round(REFERENCE_S * rate)
    envelope = np.sin(2 * np.pi * 4 * np.arange(n) / rate) > -0.3
    return (rng.standard_normal(n) * 0.1 * envelope).astype(np.float32)


async def one_reply(
    engine: SilmaEngine, clip: np.ndarray, seed: int = SEED
) -> tuple[float, float, float]:
    """(time to first chunk, total time, audio seconds) of one streamed reply."""
    started = time.perf_counter()
    first, audio = None, 0
    spoken = Utterance(REPLY, clip, 24000, REFERENCE_TEXT, seed=seed)
    async with contextlib.aclosing(engine.synthesize(spoken)) as chunks:
        async for chunk in chunks:
            first = first or time.perf_counter() - started
            audio += chunk.size
    assert first is not None
    return first, time.perf_counter() - started, audio / engine.sample_rate


async def level(engine: SilmaEngine, clip: np.ndarray, concurrency: int) -> str:
    compute, audio = engine.stats.total_compute_s, engine.stats.total_audio_s
    chunks, passes = engine.stats.total_chunks, engine.executor.passes
    started = time.perf_counter()
    results = await asyncio.gather(
        *(one_reply(engine, clip, SEED + n) for n in range(concurrency))
    )
    wall = time.perf_counter() - started
    per_pass = (engine.stats.total_chunks - chunks) / max(1, engine.executor.passes - passes)
    firsts = sorted(r[0] for r in results)
    rtf = (engine.stats.total_compute_s - compute) / (engine.stats.total_audio_s - audio)
    p95 = firsts[min(len(firsts) - 1, round(0.95 * (len(firsts) - 1)))]
    spoken = sum(r[2] for r in results)
    p50 = statistics.median(firsts)
    return (
        f"{engine.executor.max_batch:>9} {concurrency:>11} {p50 * 1000:>14.0f} "
        f"{p95 * 1000:>14.0f} {rtf:>9.3f} {spoken / wall:>15.2f} {per_pass:>14.1f}"
    )


def model_passes(model: SilmaModel, clip: np.ndarray, size: int) -> str:
    """One pass of `size` chunks vs a pass each, at the model (the engine's front end aside)."""
    reference = model.mel_frames(clip)
    frames = int(reference.shape[1])
    per_char = frames / len(REFERENCE_TEXT)  # the reference's own speaking rate
    sentences = [f"{part.strip()}." for part in REPLY.split(".") if part.strip()]
    texts = [sentences[n % len(sentences)] for n in range(size)]
    items = [
        # REFERENCE_TEXT ends a sentence already: a space starts the next.
        SpeechItem(reference, f"{REFERENCE_TEXT} {text}", frames + round(per_char * len(text)),
                   frames, SEED + n)
        for n, text in enumerate(texts)
    ]
    timings = {}
    for name, run in (
        ("alone", lambda: [model.generate([item]) for item in items]),
        ("batched", lambda: model.generate(items)),
    ):
        run()  # unmeasured: the first pass of a shape picks its kernels
        started = time.perf_counter()
        run()
        timings[name] = time.perf_counter() - started
    return (
        f"model, {size} chunks: one pass {timings['batched'] * 1000:.0f} ms, a pass each "
        f"{timings['alone'] * 1000:.0f} ms ({timings['alone'] / timings['batched']:.2f}x)"
    )


def registration_savings(engine: SilmaEngine, clip: np.ndarray) -> str:
    """Bytes and server time per request: the clip in every request vs a registered voice id."""
    service = TTSService(TTSServerSettings(), engine)
    wav = encode_audio(clip, 24000, "wav")
    voice_id = service.register_voice(RegisterVoice(wav, REFERENCE_TEXT)).voice_id
    with_clip = (
        b'{"type":"synthesize","text":"'
        + REPLY.encode()
        + b'","reference_text":"'
        + REFERENCE_TEXT.encode()
        + b'","audio":"'
        + base64.b64encode(wav)
        + b'"}'
    )
    with_id = (
        b'{"type":"synthesize","text":"'
        + REPLY.encode()
        + b'","voice_id":"'
        + voice_id.encode()
        + b'"}'
    )
    timings = {}
    for name, raw in (("clip", with_clip), ("id", with_id)):
        started = time.perf_counter()
        for _ in range(20):
            request = service.parse(raw)
            assert isinstance(request, SynthesizeRequest)
            service._utterance(request)  # what the server does before synthesis
        timings[name] = (time.perf_counter() - started) / 20 * 1000
    return (
        f"per request, {REFERENCE_S:g} s clip as 24 kHz s16 WAV: {len(with_clip):,} bytes and "
        f"{timings['clip']:.2f} ms to parse+decode with the clip; {len(with_id):,} bytes and "
        f"{timings['id']:.3f} ms with a registered voice_id"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cpu")
    parser.add_argument("--dtype", default="auto", help="auto (float16 on CUDA), float32, ...")
    parser.add_argument("--tiny", action="store_true", help="a tiny model instead of 150M params")
    parser.add_argument("--steps", type=int, default=16, help="flow-matching steps (NFE)")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated levels")
    parser.add_argument("--max-batch", default="1,8", help="comma-separated, side by side")
    args = parser.parse_args()
    clip = reference_clip()
    with tempfile.TemporaryDirectory(prefix="silma-bench-") as folder:
        started = time.perf_counter()
        files = write_random_model(Path(folder), tiny=args.tiny)
        written = time.perf_counter() - started
        config = SilmaConfig(
            files, device=args.device, dtype=args.dtype, sampling=SamplingConfig(args.steps)
        )
        engine = SilmaEngine(config)
        started = time.perf_counter()
        await engine.start()
        health = engine.health()
        print(
            f"model {'tiny' if args.tiny else 'full size'} (random weights), device "
            f"{health['device']} {health['dtype']}, {args.steps} steps; files written in "
            f"{written:.1f} s, loaded + warmed up in {time.perf_counter() - started:.1f} s"
        )
        try:
            await one_reply(engine, clip)  # the reference clip's preparation is cached now
            print(f"reply: {len(REPLY)} characters; reference {REFERENCE_S:g} s")
            print("max batch  concurrency  first chunk p50  first chunk p95       RTF  "
                  "audio s / wall s  chunks / pass")
            for max_batch in (int(n) for n in args.max_batch.split(",")):
                engine.executor.max_batch = max_batch
                # Unmeasured: the first passes at a new batch size pick their kernels.
                await asyncio.gather(
                    *(one_reply(engine, clip, SEED + n) for n in range(max_batch))
                )
                for concurrency in (int(n) for n in args.concurrency.split(",")):
                    print(await level(engine, clip, concurrency), flush=True)
            print(registration_savings(engine, clip))
        finally:
            await engine.close()
        model = load_model(files, device=args.device, dtype=args.dtype, sampling=config.sampling)
        for size in sorted({int(n) for n in args.max_batch.split(",")} - {1}):
            print(model_passes(model, clip, size), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
