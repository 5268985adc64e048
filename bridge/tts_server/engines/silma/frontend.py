"""What the SILMA model is given for a reply, by silma-tts 1.0.5's own rules: pure, no torch.

Upstream (`SilmaTTS.infer` in api.py, `infer_process` / `infer_batch_process` in
infer/utils_infer.py) prepares a reply in this order, and so do we:
1. newlines become sentence breaks ("\\n" -> ". "), then the whole text is normalized (numbers
   and the like, in the language of the whole text: our pre-normalizer, then NeMo as upstream);
2. the speed factor: a text that "is Arabic" is spoken 1.3x faster when it had to be
   diacritized, or when more than 20% of its characters are harakat. Upstream's test for Arabic
   is `[\\u0600-\\u06FF ]`, whose class holds the space, so every text of two words or more
   counts, English included: with diacritization on, multi-word English is 1.3x too. That is
   what SILMA's model has been heard with, so it is kept (tests pin it);
3. Arabic spans of a text with fewer than 3 harakat are diacritized;
4. chunks (text.py); the last chunk's final short vowel becomes a sukun and, if the chunk does
   not end in punctuation, ". " is appended;
5. each chunk's length in frames: the reference's frames (its 1 s pad included) per character of
   its transcript (with the ".  " upstream appends), times the chunk's characters, over the
   speed; a chunk under 25 characters is spoken 1.3x slower (at least 0.3x);
6. after each chunk of a reply of several, a pause of 1/speed s when the chunk ends in "." and
   0.5/speed s otherwise (the last chunk too).
And to the model's output: each chunk loses what is quieter than its peak by 40 dB at its start
and, but for the last chunk, at its end (`trim_generated`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Literal

import numpy as np

from bridge.tts_server.engines.silma.normalizer import language_of
from bridge.tts_server.engines.silma.text import Chunking, split_for_speech

Pauses = Literal["upstream", "between"]
PAUSES: tuple[Pauses, ...] = ("upstream", "between")

HARAKAT = re.compile(r"[\u064B-\u0652]")
SUKUN = "\u0652"
# Upstream's "is Arabic" class: the Arabic block and the space (see the module docstring).
_ARABIC_OR_SPACE = re.compile(r"[\u0600-\u06FF ]")
# Upstream's Arabic span: runs of Arabic letters, tatweel, harakat, dagger alif, alif wasla and
# the lam-alif ligatures, joined by white space.
_ARABIC_LETTERS = "\u0621-\u063A\u0640-\u0652\u0670\u0671\ufefb\ufef7\ufef5\ufef9"
ARABIC_SPAN = re.compile(rf"[{_ARABIC_LETTERS}]+(?:\s+[{_ARABIC_LETTERS}]+)*")
END_MARKS = ".,،؟؛:!?;"
DIACRITIZED_SHARE = 0.2  # more harakat than this share of the text: spoken 1.3x faster
MIN_HARAKAT = 3  # fewer marks than this: the text is diacritized
ARABIC_SPEEDUP = 1.3
SHORT_CHUNK_CHARS = 25  # a shorter chunk is spoken 1.3x slower
SHORT_CHUNK_SLOWDOWN = 1.3
MIN_SPEED = 0.3
FULL_STOP_PAUSE_S = 1.0  # over the speed, after a chunk ending in "."
OTHER_PAUSE_S = 0.5  # over the speed, after any other chunk
TRIM_DB = 40.0  # a chunk's edges quieter than its peak by this much are cut

Diacritize = Callable[[str], str]  # an Arabic span in, the same span with harakat out
Normalize = Callable[[str, str], str]  # (text, language) -> text as words


def is_arabic(text: str) -> bool:
    """Upstream's `text_is_arabic`: any Arabic character, or any space."""
    return _ARABIC_OR_SPACE.search(text) is not None


def reference_transcript(text: str) -> str:
    """The transcript as the model reads it before the reply: ends in ". ", and in a second space
    when its last character is one byte in UTF-8 (so "Hello." becomes "Hello.  ")."""
    if not text.endswith(". ") and not text.endswith("。"):
        text += " " if text.endswith(".") else ". "
    if len(text[-1].encode("utf-8")) == 1:
        text += " "
    return text


def sukun_last(text: str) -> str:
    """Upstream's `normalize_last_word`: the last letter's short vowel becomes a sukun (a
    reply's final word is said in pause form), keeping one trailing punctuation mark."""
    text = text.strip()
    mark = ""
    if text and text[-1] in END_MARKS:
        mark, text = text[-1], text[:-1].strip()
    if text and HARAKAT.fullmatch(text[-1]):
        text = text[:-1] + SUKUN
    return text + mark


@dataclasses.dataclass(frozen=True)
class Chunk:
    text: str  # as the model reads it, after the reference transcript
    pause_s: float  # silence after it (upstream placement) before the next chunk


@dataclasses.dataclass(frozen=True)
class Plan:
    """A reply, ready for the model."""

    text: str  # the whole text after normalization and diacritization
    speed: float  # the caller's speed times the Arabic factor
    chunks: tuple[Chunk, ...]


def plan_reply(
    text: str,
    *,
    speed: float,
    normalize: Normalize | None,
    diacritize: Diacritize | None,
    chunking: Chunking,
) -> Plan:
    """Steps 1-4 and 6 of the module docstring for one reply."""
    text = text.strip()
    if "\n" in text:
        text = text.replace("\n\n", "\n").replace("\n", ". ")
    if normalize is not None:
        text = normalize(text, language_of(text))
    factor = 1.0
    if is_arabic(text):
        marks = len(HARAKAT.findall(text))
        if marks >= MIN_HARAKAT:
            if marks / len(text) > DIACRITIZED_SHARE:
                factor = ARABIC_SPEEDUP
        elif diacritize is not None:
            text = ARABIC_SPAN.sub(lambda span: diacritize(span.group(0)), text)
            factor = ARABIC_SPEEDUP
    speed *= factor
    pieces = split_for_speech(text, chunking)
    if pieces:
        last = sukun_last(pieces[-1])
        pieces[-1] = last if last[-1:] in END_MARKS else f"{last.strip()}. "
    several = len(pieces) > 1
    chunks = tuple(
        Chunk(piece, pause_after(piece, speed) if several else 0.0) for piece in pieces
    )
    return Plan(text, speed, chunks)


def pause_after(chunk: str, speed: float) -> float:
    return (FULL_STOP_PAUSE_S if chunk.strip().endswith(".") else OTHER_PAUSE_S) / speed


def chunk_speed(chunk: str, speed: float) -> float:
    if len(chunk) < SHORT_CHUNK_CHARS:
        return max(speed / SHORT_CHUNK_SLOWDOWN, MIN_SPEED)
    return speed


def chunk_frames(reference_frames: int, transcript: str, chunk: str, speed: float) -> int:
    """Upstream's `duration`: the whole pass (reference included) in mel frames, where
    `reference_frames` is the padded clip's samples // hop and `transcript` is what
    `reference_transcript` made of it."""
    per_char = reference_frames / len(transcript)
    return reference_frames + int(per_char * len(chunk) / chunk_speed(chunk, speed))


def pause_samples(seconds: float, rate: int) -> int:
    return int(rate * seconds)


def trim_generated(wave: np.ndarray, *, keep_end: bool) -> np.ndarray:
    """Upstream's `fast_trim(top_db=40)`: sample amplitudes against the chunk's peak."""
    loud = np.abs(wave) > np.max(np.abs(wave)) * 10 ** (-TRIM_DB / 20)
    if not loud.any():
        return wave[:0]
    start = int(np.argmax(loud))
    end = wave.size if keep_end else wave.size - int(np.argmax(loud[::-1]))
    return wave[start:end]
