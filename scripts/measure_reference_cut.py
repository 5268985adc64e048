#!/usr/bin/env python3
"""How far the transcript kept for a cut reference clip is from the words the kept audio holds.

    .venv/bin/python scripts/measure_reference_cut.py [--out scripts/results/reference_cut.txt]

silma-tts cuts a reference clip over 8.05 s at a pause and re-transcribes what it kept with
Whisper; voices.py keeps the cut but, with no Whisper, shortens the operator's transcript to
match (`_cut_text`). Here Piper reads 20 paragraphs of 10-20 s, sentence by sentence, with
phoneme alignments, so the time each word is spoken is known; the sentences are joined as Piper
speaks them (no pause between, its default) and again with 0.5 s and 1 s pauses (a read
recording), and each clip goes through `prepare_clip`. The ground truth is the words whose
middle lies in the audio `_cut_long` keeps (what Whisper would hear); it is compared with the
transcript of the old rule, "before" (characters in proportion to the share of the clip's time
kept), and with prepare_clip's, "after" (in proportion to the share of its speech kept).
Piper's timing is random (its noise), so the figures move a little from run to run.
Tempo error: upstream gives a reply ref_frames / len(ref_text) frames per character (its
ref_text with the space it appends), so a transcript of the wrong length makes every reply
true_len / kept_len - 1 longer (+, slower) or shorter (-, faster) than the voice speaks.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.tts_server.engines.piper import default_voice
from bridge.tts_server.engines.silma.voices import (
    MAX_REFERENCE_S,
    _cut_long,
    _pcm_segment,
    prepare_clip,
)

MODEL_RATE = 24000
SENTENCE_GAPS_S = (0.0, 0.5, 1.0)
PAUSES = frozenset(",.;:!?^$")  # punctuation, sentence start and end: no sound of a word
MARKS = frozenset("ˈˌːʲ")
WORD_BREAK = " "

PARAGRAPHS: tuple[tuple[str, ...], ...] = (
    (
        "Thank you for calling the county library, where every question matters.",
        "Our opening hours have changed this season.",
        "From Monday to Thursday, we open at nine in the morning and close at eight in the "
        "evening.",
        "On Fridays we close at six.",
    ),
    (
        "Hello.",
        "My name is Daniel, and I will be your guide today.",
        "We will walk through the old town, visit the cathedral, and stop for lunch near the "
        "river.",
        "Please stay close to the group, and ask me anything along the way.",
    ),
    (
        "The quarterly report shows revenue of four hundred and twelve thousand dollars, up eleven "
        "percent from last year.",
        "Operating costs rose slightly, mostly because of transportation.",
        "We expect the trend to continue.",
    ),
    (
        "Internationalization and localization are often confused.",
        "Internationalization prepares the software; localization adapts it to a particular "
        "market, language, and culture.",
        "Both require careful planning.",
    ),
    (
        "Your order number is seven three nine two five one.",
        "It shipped yesterday afternoon and should arrive within three to five business days.",
        "If anything is missing or damaged, simply reply to this message with a photograph.",
    ),
    (
        "Good morning, everyone.",
        "Before we start, a few reminders.",
        "Phones on silent, please.",
        "Coffee is in the back.",
        "Lunch will be served at twelve thirty, and the afternoon session begins at one fifteen.",
    ),
    (
        "The experiment was repeated twenty four times under identical conditions, and the "
        "measurements were remarkably consistent across every single trial that we conducted "
        "during the spring and the early summer of that year.",
    ),
    (
        "Wait.",
        "Did you hear that?",
        "Something moved in the garden, just behind the old apple tree.",
        "It was probably the neighbour's cat, but I want to be sure.",
        "Stay here.",
        "I will take the torch and have a look around the shed.",
    ),
    (
        "Photosynthesis converts light energy into chemical energy.",
        "Chlorophyll absorbs mostly blue and red wavelengths, reflecting green, which is why "
        "leaves look green to us.",
        "The process releases oxygen.",
    ),
    (
        "To reset your password, open the settings page, choose security, and then select forgot "
        "password.",
        "You will receive an email with a temporary code.",
        "Enter the code within fifteen minutes.",
    ),
    (
        "In nineteen sixty nine, astronauts landed on the moon for the first time.",
        "Millions of people watched the grainy black and white broadcast, holding their breath as "
        "the lunar module touched down.",
    ),
    (
        "I love cooking on weekends.",
        "Saturday is usually pasta, with fresh tomatoes, garlic, basil, and plenty of olive oil.",
        "Sunday is for soup.",
        "My children prefer pancakes, of course.",
    ),
    (
        "The committee reviewed all applications carefully.",
        "Unfortunately, we received many more qualified candidates than available positions.",
        "We appreciate your interest and encourage you to apply again next year.",
    ),
    (
        "Turn left at the second traffic light.",
        "Continue straight for about two kilometres.",
        "You will pass a petrol station on your right.",
        "The hospital entrance is just after the roundabout, next to the pharmacy.",
    ),
    (
        "Notwithstanding the aforementioned considerations, the constitutional amendment was "
        "ratified unanimously by the legislature.",
        "Implementation, however, remains extraordinarily complicated.",
    ),
    (
        "One, two, three, four, five.",
        "Now breathe in slowly.",
        "Hold it.",
        "And breathe out, letting your shoulders relax completely, from your neck down to your "
        "fingertips.",
        "Once more.",
    ),
    (
        "Our train to the coast leaves at seven forty five tomorrow morning from platform eleven, "
        "so we should leave the hotel no later than seven.",
        "Breakfast will be packed for us, and the taxi is already booked.",
    ),
    (
        "Customer satisfaction surveys indicate that response time is the single most important "
        "factor.",
        "Friendliness comes second.",
        "Price, surprisingly, ranks only fourth, behind product availability.",
    ),
    (
        "The storm is expected to reach the coast tonight.",
        "Winds may exceed one hundred kilometres per hour.",
        "Residents are advised to stay indoors, secure loose objects, and keep emergency supplies "
        "ready.",
    ),
    (
        "Excuse me, could you tell me where the nearest post office is?",
        "I need to send this parcel to my sister in Melbourne before Friday.",
        "Thank you so much, that is very kind.",
        "Have a wonderful afternoon.",
    ),
)


@dataclasses.dataclass(frozen=True, slots=True)
class Clip:
    audio: np.ndarray  # float32 mono at the Piper rate
    words: list[str]  # the transcript's words, punctuation attached
    middles: list[int]  # the sample at the middle of each word's speech


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    name: str
    clip_s: float
    kept_s: float
    true_text: str
    before_text: str
    after_text: str


def old_cut_text(text: str, kept: float) -> str:
    """The rule voices.py had: characters in proportion to the kept share of the clip's time."""
    words = text.split()
    target = kept * len(text)
    spoken, count = 0, 0
    for word in words:
        if spoken + len(word) / 2 > target:
            break
        spoken += len(word) + 1
        count += 1
    return " ".join(words[: max(1, count)])


def is_sound(phoneme: str) -> bool:
    # stress, length and linking marks are set differently for a word alone and in a sentence
    return phoneme not in MARKS and phoneme not in PAUSES and phoneme != WORD_BREAK


def word_sounds(voice: Any, word: str) -> list[str]:
    return [p for sentence in voice.phonemize(word) for p in sentence if is_sound(p)]


def word_middles(voice: Any, words: Sequence[str], chunk: Any) -> tuple[list[int], int]:
    """Middle sample of each word's sounds in a Piper chunk, and how many words were guessed.

    espeak joins some words in a sentence ("in the" is said as one word), so the sentence's
    sounds are matched to each word's sounds said alone, and a word spans the time of the
    sentence sounds matched to it. A word none of whose sounds match (a lone "a" is said as the
    letter) is put midway between its neighbours' sounds.
    """
    heard: list[tuple[int, int, str]] = []
    position = 0
    for alignment in chunk.phoneme_alignments:
        if is_sound(alignment.phoneme):
            heard.append((position, position + int(alignment.num_samples), alignment.phoneme))
        position += int(alignment.num_samples)
    said = [(n, p) for n, word in enumerate(words) for p in word_sounds(voice, word)]
    matcher = difflib.SequenceMatcher(
        None, [p for _, p in said], [p for _, _, p in heard], autojunk=False
    )
    firsts: dict[int, int] = {}
    lasts: dict[int, int] = {}
    for a, b, size in matcher.get_matching_blocks():
        for k in range(size):
            firsts.setdefault(said[a + k][0], heard[b + k][0])
            lasts[said[a + k][0]] = heard[b + k][1]
    middles: list[int] = []
    for n in range(len(words)):
        if n in firsts:
            middles.append((firsts[n] + lasts[n]) // 2)
            continue
        before = max((lasts[m] for m in lasts if m < n), default=0)
        after = min((firsts[m] for m in firsts if m > n), default=position)
        middles.append((before + after) // 2)
    return middles, len(words) - len(firsts)


def speak(voice: Any, sentence: str) -> tuple[str, np.ndarray, list[int], int]:
    """(sentence, its audio, each word's middle sample, how many of them were guessed)."""
    chunks = list(voice.synthesize(sentence, include_alignments=True))
    if len(chunks) != 1 or chunks[0].phoneme_alignments is None:
        raise RuntimeError(f"Piper gave {len(chunks)} chunks or no alignments for {sentence!r}")
    middles, guessed = word_middles(voice, sentence.split(), chunks[0])
    if middles != sorted(middles):  # a word matched to sounds far from its own
        raise RuntimeError(f"the words' times are out of order in {sentence!r}")
    return sentence, chunks[0].audio_float_array, middles, guessed


def build_clip(spoken: Sequence[tuple[str, np.ndarray, list[int], int]], gap: np.ndarray) -> Clip:
    pieces: list[np.ndarray] = []
    words: list[str] = []
    middles: list[int] = []
    position = 0
    for sentence, audio, sentence_middles, _ in spoken:
        if pieces:
            pieces.append(gap)
            position += gap.size
        words += sentence.split()
        middles += [position + middle for middle in sentence_middles]
        pieces.append(audio)
        position += audio.size
    return Clip(np.concatenate(pieces), words, middles)


def kept_span(audio: np.ndarray, rate: int) -> tuple[int, int, float]:
    """(first, end) samples of the slice `_cut_long` keeps, and that slice's share of the clip."""
    whole = _pcm_segment(audio, rate)
    original = np.asarray(whole.get_array_of_samples())
    kept = np.asarray(_cut_long(whole).get_array_of_samples())
    # The pieces it joins are consecutive slices (no pause here is long enough to be shortened),
    # so the kept audio is one slice of the clip: find it by its first sound.
    first = int(np.flatnonzero(original)[0] - np.flatnonzero(kept)[0])
    if not np.array_equal(original[first : first + kept.size], kept):
        raise RuntimeError("the kept audio is not one slice of the clip")
    return first, first + kept.size, kept.size / original.size


def measure(name: str, clip: Clip, rate: int) -> Row:
    text = " ".join(clip.words)
    if clip.audio.size / rate <= MAX_REFERENCE_S:
        raise RuntimeError(f"clip {name} is too short to be cut; lengthen its paragraph")
    first, end, kept = kept_span(clip.audio, rate)
    true_words = [w for w, middle in zip(clip.words, clip.middles, strict=True) if middle < end]
    if first > clip.middles[0]:
        raise RuntimeError("the cut dropped the clip's first word")
    after = prepare_clip(clip.audio, rate, text, MODEL_RATE).text
    return Row(
        name,
        clip.audio.size / rate,
        (end - first) / rate,
        " ".join(true_words),
        old_cut_text(text, kept),
        after,
    )


def tempo_error(true_text: str, kept_text: str) -> float:
    """Reply length with kept_text as ref_text over that with the true text, minus 1."""
    return len(f"{true_text} ".encode()) / len(f"{kept_text} ".encode()) - 1


def word_error(true_text: str, kept_text: str) -> int:
    """Words too many (+) or too few (-); both are prefixes of the same transcript."""
    return len(kept_text.split()) - len(true_text.split())


def row_line(row: Row) -> str:
    n = len(row.true_text.split())
    cells = [f"{row.name:<9}{row.clip_s:6.2f}{row.kept_s:6.2f}{n:6d}"]
    for text in (row.before_text, row.after_text):
        diff = word_error(row.true_text, text)
        tempo = tempo_error(row.true_text, text)
        cells.append(f"{diff:+7d}{100 * diff / n:+8.1f}%{100 * tempo:+8.1f}%")
    return "   ".join(cells)


def summary(rows: Sequence[Row], label: str, pick: int) -> str:
    texts = [(row.true_text, (row.before_text, row.after_text)[pick]) for row in rows]
    diffs = [word_error(t, k) for t, k in texts]
    tempos = [abs(tempo_error(t, k)) for t, k in texts]
    return (
        f"{label}: words wrong on {sum(d != 0 for d in diffs)}/{len(rows)} clips "
        f"({sum(d for d in diffs if d > 0)} too many, {-sum(d for d in diffs if d < 0)} too few, "
        f"mean |error| {statistics.mean(abs(d) for d in diffs):.2f} words); "
        f"|tempo error| mean {100 * statistics.mean(tempos):.1f}%, "
        f"median {100 * statistics.median(tempos):.1f}%, max {100 * max(tempos):.1f}%, "
        f"over 5% on {sum(t > 0.05 for t in tempos)}/{len(rows)} clips"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="scripts/results/reference_cut.txt")
    args = parser.parse_args()

    from piper import PiperVoice

    model, config = default_voice()
    voice = PiperVoice.load(model, config, include_alignments=True)
    rate = int(voice.config.sample_rate)
    spoken = [[speak(voice, sentence) for sentence in paragraph] for paragraph in PARAGRAPHS]
    words = sum(len(sentence.split()) for paragraph in PARAGRAPHS for sentence in paragraph)
    guessed = sum(said[3] for paragraph in spoken for said in paragraph)
    intro = (
        f"Piper read {len(PARAGRAPHS)} paragraphs ({words} words) at {rate} Hz, sentence by "
        f"sentence; {guessed} words matched no sound and were placed between their neighbours"
    )
    print(intro)

    rule = f"{'±words':>7}{'of true':>9}{'tempo':>9}"
    header = (
        f"{'':27}   {'before (time share)':^25}   {'after (speech share)':^25}\n"
        f"{'clip+gap':<9}{'len s':>6}{'kept':>6}{'words':>6}   {rule}   {rule}"
    )
    lines = [intro, "", header]
    print(header)
    rows: dict[float, list[Row]] = {}
    for gap_s in SENTENCE_GAPS_S:
        gap = np.zeros(round(gap_s * rate), dtype=np.float32)
        for n, paragraph in enumerate(spoken, 1):
            row = measure(f"{n:02d}+{gap_s:.1f}s", build_clip(paragraph, gap), rate)
            rows.setdefault(gap_s, []).append(row)
            lines.append(row_line(row))
            print(lines[-1], flush=True)

    lines.append("")
    for gap_s, gap_rows in rows.items():
        for pick, label in enumerate(("before", "after")):
            lines.append(summary(gap_rows, f"{label}, {gap_s:.1f} s between sentences", pick))
    everything = [row for gap_rows in rows.values() for row in gap_rows]
    for pick, label in enumerate(("before", "after")):
        lines.append(summary(everything, f"{label}, all {len(everything)} clips", pick))
    print("\n".join(lines[len(everything) + 3 :]))
    lines += ["", "transcripts kept where one rule is wrong: truth (T), before (B), after (A)"]
    for row in everything:
        if row.true_text != row.before_text or row.true_text != row.after_text:
            lines += [
                f"  {row.name}",
                f"    T {row.true_text}",
                f"    B {row.before_text}",
                f"    A {row.after_text}",
            ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{__doc__}\n" + "\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
