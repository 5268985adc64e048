#!/usr/bin/env python3
"""Real-time factor of the Piper engine on this machine (RTF = synthesis time / audio time).

Speaks a few sentences one at a time through the TTS server's Piper engine, printing each as it
finishes, then the same sentences two at a time (what the server does with concurrency 2), and
prints RTF and time to first chunk side by side. Lower RTF is faster; below 1 keeps up with
real time. Not a test: numbers vary with the machine.
"""

import asyncio
import statistics
import time

from bridge.tts_server.engines.base import Utterance
from bridge.tts_server.engines.piper import PiperEngine

SENTENCES = (
    "Hello! You are talking to the SILMA voice bridge.",
    "Press one to hear about it, or two for a joke.",
    "This bridge streams speech from text to speech to your phone, in real time.",
    "Why did the packet cross the network? To get to the other side.",
    "Your appointment is confirmed for Tuesday morning at ten thirty. Goodbye!",
)


async def speak(engine: PiperEngine, text: str) -> tuple[float, float, float]:
    """(seconds to the first chunk, seconds in all, seconds of audio)."""
    start = time.perf_counter()
    first = None
    samples = 0
    async for chunk in engine.synthesize(Utterance(text)):
        first = first if first is not None else time.perf_counter() - start
        samples += chunk.size
    return first or 0.0, time.perf_counter() - start, samples / engine.sample_rate


async def main() -> None:
    engine = PiperEngine(workers=2)
    start = time.perf_counter()
    await engine.start()
    print(f"Piper voice loaded and warmed up in {time.perf_counter() - start:.2f} s")

    print("\none at a time:")
    firsts, synth, audio = [], 0.0, 0.0
    for i, text in enumerate(SENTENCES, 1):
        first, took, seconds = await speak(engine, text)
        firsts.append(first)
        synth, audio = synth + took, audio + seconds
        print(
            f"  [{i}/{len(SENTENCES)}] {seconds:4.2f} s of audio in {took:4.2f} s "
            f"(RTF {took / seconds:.3f}, first chunk {first * 1000:.0f} ms)"
        )
    sequential_rtf = synth / audio

    print("\ntwo at a time:")
    start = time.perf_counter()
    results = await asyncio.gather(*(speak(engine, text) for text in SENTENCES[:4]))
    wall = time.perf_counter() - start
    concurrent_rtf = wall / sum(seconds for _, _, seconds in results)
    concurrent_first = statistics.median(first for first, _, _ in results)
    print(f"  4 sentences, 2 workers: {wall:.2f} s wall")
    await engine.close()

    print("\nsummary (RTF = synthesis seconds per audio second):")
    print(
        f"  sequential     RTF {sequential_rtf:.3f}   "
        f"first chunk median {statistics.median(firsts) * 1000:.0f} ms"
    )
    print(
        f"  2 concurrent   RTF {concurrent_rtf:.3f} (aggregate)   "
        f"first chunk median {concurrent_first * 1000:.0f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
