#!/usr/bin/env python3
"""What the silma engine's deliberate deviations from silma-tts 1.0.5 cost in tempo and length.

    .venv/bin/python scripts/measure_silma_fidelity.py [--out scripts/results/silma_fidelity.txt]

A reply's length is decided before the model runs: each chunk's frames come from the reference
clip, the transcript and the chunk (frontend.py), and the pauses from the chunk's last mark. So
the figures here are the planned speech of each setting for a real reference clip (Piper reads
the transcript; the Arabic rows reuse its length with an Arabic transcript of the same number of
characters), with no model needed: frames of speech (what the model makes, the reference's
frames excluded), the seconds they and the pauses add up to, and the first pass's frames (the
reference's included), which is what the time to the first audio grows with.
Settings: `silma_chunking` latency (default) vs upstream, `silma_pauses` upstream (default) vs
between; "upstream, upstream" is silma-tts itself.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.audio.resample import StreamResampler
from bridge.tts_server.engines.base import Utterance
from bridge.tts_server.engines.piper import PiperEngine
from bridge.tts_server.engines.silma.frontend import (
    Plan,
    chunk_frames,
    plan_reply,
    reference_transcript,
)
from bridge.tts_server.engines.silma.text import Chunking
from bridge.tts_server.engines.silma.voices import prepare_clip

RATE = 24000
HOP = 256
EN_TRANSCRIPT = "This is the voice I would like you to use for my calls."
AR_TRANSCRIPT = "هذا هو الصوت الذي أريد أن تستخدمه في مكالماتي اليوم."
REPLIES = {
    "en, one sentence": "Hi, thanks for calling. How can I help you today?",
    "en, 395 chars": (
        "Thank you for calling the support line. Your order number is four four seven one and it "
        "left our warehouse this morning; it should reach you by Thursday. If you need to change "
        "the delivery address, say change address, or stay on the line and an agent will help "
        "you shortly. You can also reply to the text message we sent you. Is there anything "
        "else I can help you with today?"
    ),
    "ar, one sentence": "مَرْحَبًا بِكُمْ فِي خِدْمَةِ الْعُمَلَاءِ، كَيْفَ يُمْكِنُنِي مُسَاعَدَتُكَ الْيَوْمَ؟",
    "ar, 3 sentences": (
        "مَرْحَبًا بِكُمْ فِي خِدْمَةِ الْعُمَلَاءِ. طَلَبُكُمْ فِي الطَّرِيقِ وَسَيَصِلُ يَوْمَ الْخَمِيسِ. "
        "هَلْ هُنَاكَ شَيْءٌ آخَرُ يُمْكِنُنِي مُسَاعَدَتُكَ بِهِ؟"
    ),
}
SETTINGS: tuple[tuple[Chunking, str], ...] = (
    ("upstream", "upstream"), ("latency", "upstream"), ("latency", "between"),
    ("upstream", "between"),
)


async def reference_clip() -> np.ndarray:
    engine = PiperEngine()
    await engine.start()
    try:
        chunks = [c async for c in engine.synthesize(Utterance(EN_TRANSCRIPT))]
    finally:
        await engine.close()
    audio = np.concatenate(chunks)
    if engine.sample_rate != RATE:
        resampler = StreamResampler(engine.sample_rate, RATE)
        audio = np.concatenate([resampler.process(audio), resampler.flush()])
    return audio.astype(np.float32)


def planned(plan: Plan, reference_frames: int, transcript: str, pauses: str) -> dict[str, float]:
    frames = [chunk_frames(reference_frames, transcript, c.text, plan.speed) for c in plan.chunks]
    speech = [f - reference_frames for f in frames]
    pause_s = [c.pause_s for c in plan.chunks]
    if pauses == "between":
        pause_s[-1] = 0.0  # the same pauses, moved before the next chunk: none after the last
    return {
        "chunks": len(frames),
        "speech_frames": sum(speech),
        "seconds": sum(speech) * HOP / RATE + sum(pause_s),
        "first_pass_frames": frames[0],
        "first_chars": len(plan.chunks[0].text),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("scripts/results/silma_fidelity.txt"))
    args = parser.parse_args()
    print("rendering the reference clip with Piper ...", flush=True)
    audio = asyncio.run(reference_clip())
    clip = prepare_clip(audio, RATE, EN_TRANSCRIPT, RATE)
    reference_frames = clip.audio.size // HOP
    lines = [
        f"Reference: Piper, {audio.size / RATE:.2f} s as rendered, {clip.audio.size / RATE:.2f} s "
        f"prepared (edges trimmed, 1 s pad), {reference_frames} frames; transcripts of "
        f"{len(EN_TRANSCRIPT)} (en) and {len(AR_TRANSCRIPT)} (ar) characters.",
        "",
        f"{'reply':<18} {'chunking, pauses':<20} {'chunks':>6} {'speech fr':>9} {'seconds':>8} "
        f"{'vs upstream':>11} {'1st chars':>9} {'1st pass fr':>11}",
    ]
    for name, reply in REPLIES.items():
        transcript = reference_transcript(AR_TRANSCRIPT if name.startswith("ar") else EN_TRANSCRIPT)
        base: float | None = None
        for chunking, pauses in SETTINGS:
            plan = plan_reply(reply, speed=1.0, normalize=None, diacritize=None, chunking=chunking)
            row = planned(plan, reference_frames, transcript, pauses)
            base = row["seconds"] if base is None else base
            lines.append(
                f"{name:<18} {chunking + ', ' + pauses:<20} {row['chunks']:>6} "
                f"{row['speech_frames']:>9} {row['seconds']:>8.2f} "
                f"{row['seconds'] / base:>10.3f}x {row['first_chars']:>9} "
                f"{row['first_pass_frames']:>11}"
            )
        lines.append("")
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text + "\n", encoding="utf-8")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
