#!/usr/bin/env python3
"""Speed of the outbound DSP path (24 kHz float32 -> 8 kHz mu-law 20 ms frames) on one core.

Feeds the same speech-like signal through TelephonyEncoder in 20 ms, 40 ms and 1 s pieces and
prints each as "x real time" (audio seconds per CPU second), measured side by side in one run.
The target is >= 1000x for 20-40 ms pieces. Not a test: numbers vary with the machine.
"""

import sys
import time

import numpy as np

from bridge.audio.pipeline import TelephonyEncoder

RATE = 24000
AUDIO_S = 20.0  # seconds of audio per run
UTTERANCE_S = 4.0  # flush (end of utterance) this often, as a call would
REPEATS = 7  # best of: the least disturbed run; the median shows how noisy the machine is
PIECES_MS = (20, 40, 1000)
TARGET_X = 1000.0


def speech_like(seconds: float, rate: int) -> np.ndarray:
    """A few tones under a syllable-rate envelope, at speech-like levels."""
    t = np.arange(int(seconds * rate)) / rate
    tones = sum(a * np.sin(2 * np.pi * f * t) for f, a in ((180, 0.3), (750, 0.2), (2400, 0.1)))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t)
    return (tones * envelope).astype(np.float32)


def run_once(signal: np.ndarray, piece: int, per_utterance: int) -> tuple[float, int]:
    """CPU seconds to encode `signal` in pieces of `piece` samples, and the bytes produced."""
    encoder = TelephonyEncoder(RATE)
    produced = 0
    start = time.perf_counter()
    for u in range(0, len(signal), per_utterance):
        utterance = signal[u : u + per_utterance]
        for i in range(0, len(utterance), piece):
            produced += len(encoder.process(utterance[i : i + piece]))
        produced += len(encoder.flush())
    return time.perf_counter() - start, produced


def main() -> int:
    signal = speech_like(AUDIO_S, RATE)
    per_utterance = int(UTTERANCE_S * RATE)
    print(
        f"DSP path: {AUDIO_S:.0f} s of {RATE} Hz float32 -> 8 kHz mu-law 160-byte frames, "
        f"flush every {UTTERANCE_S:.0f} s, best (median) of {REPEATS} runs, one core"
    )
    results: dict[int, float] = {}
    for ms in PIECES_MS:
        piece = RATE * ms // 1000
        times = []
        for r in range(REPEATS):
            print(f"\r  {ms:>4} ms pieces: run {r + 1}/{REPEATS}", end="", flush=True)
            elapsed, produced = run_once(signal, piece, per_utterance)
            times.append(elapsed)
        best, median = min(times), float(np.median(times))
        results[ms] = AUDIO_S / best
        per_piece_us = best / (len(signal) / piece) * 1e6
        print(
            f"\r  {ms:>4} ms pieces: {results[ms]:6.0f}x ({AUDIO_S / median:6.0f}x) real time, "
            f"{per_piece_us:6.1f} us per piece, {produced // 160} frames"
        )
    slowest = min(results[ms] for ms in PIECES_MS if ms <= 40)
    verdict = "meets" if slowest >= TARGET_X else "misses"
    print(f"20-40 ms pieces: {slowest:.0f}x real time, {verdict} the {TARGET_X:.0f}x target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
