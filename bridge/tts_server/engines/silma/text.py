"""Splitting a reply into synthesis chunks: silma-tts's own chunker, and our shorter first chunk.

Pure string work. `upstream_chunks` is silma-tts 1.0.5's `chunk_text` (infer/utils_infer.py)
rule for rule, quirks included (tests/integration/test_silma_fidelity.py runs both on the same
texts): pieces end at `;:,.!?،` followed by white space, are merged up to 120 characters, and a
piece still longer is cut at words, at 80% of the limit.

`latency_chunks` (the default) is upstream's chunks but for a first one over 60 characters,
which becomes its opening clause (25 characters at least: a shorter chunk is spoken 1.3x
slower), the rest chunked as upstream does. The first chunk's synthesis is the caller's
silence: on a 395-character reply the first pass shrinks from about 1100 to 600 frames (reference
included) for 3.6% more length; a reply whose first chunk is short already is left as upstream
has it (scripts/results/silma_fidelity.txt).
"""

from __future__ import annotations

import re
from typing import Literal

Chunking = Literal["latency", "upstream"]
CHUNKINGS: tuple[Chunking, ...] = ("latency", "upstream")

UPSTREAM_MAX_CHARS = 120
WORD_CUT_FRACTION = 0.8  # upstream cuts an over-long piece at words, at this share of the limit
FIRST_MIN_CHARS = 25  # upstream speaks a shorter chunk 1.3x slower: merge with what follows
FIRST_MAX_CHARS = 60
CLAUSE_END = ",;:،؛.!?؟…"
# Upstream's split: after ASCII/Arabic punctuation and white space, or right after a CJK mark.
_UPSTREAM_SPLIT = re.compile(r"(?<=[;:,.!?،])\s+|(?<=[\uff1b\uff1a\uff0c\u3002\uff01\uff1f])")
_CLAUSES = re.compile(rf"(?<=[{re.escape(CLAUSE_END)}])\s+")


def upstream_chunks(text: str, max_chars: int = UPSTREAM_MAX_CHARS) -> list[str]:
    """silma-tts's chunks of `text`, empty ones dropped (upstream can make one out of a single
    word longer than the cut, which would be synthesized as nothing)."""
    merged: list[str] = []
    current = ""
    for sentence in _UPSTREAM_SPLIT.split(text):
        piece = f"{sentence} " if sentence else sentence
        if len(current) + len(sentence) <= max_chars:
            current += piece
        else:
            if current:
                merged.append(current.strip())
            current = piece
    if current:
        merged.append(current.strip())
    chunks: list[str] = []
    for chunk in merged:
        if not chunk.strip():
            continue
        chunks.extend(_cut_at_words(chunk, max_chars) if len(chunk) > max_chars else [chunk])
    return [chunk for chunk in chunks if chunk]


def _cut_at_words(chunk: str, max_chars: int) -> list[str]:
    """Upstream's cut of an over-long piece: words gathered up to 80% of the limit; the last
    word, and any word after a one-letter word, always join the piece in progress."""
    pieces: list[str] = []
    words = chunk.split(" ")
    current = ""
    previous = ""
    for index, word in enumerate(words, start=1):
        if (
            len(current) + len(word) <= max_chars * WORD_CUT_FRACTION
            or index == len(words)
            or len(previous) == 1
        ):
            current += f"{word} "
        else:
            pieces.append(current.strip())
            current = f"{word} "
        previous = word
    pieces.append(current.strip())
    return pieces


def latency_chunks(text: str, first_max: int = FIRST_MAX_CHARS) -> list[str]:
    """Upstream's chunks, or, when the first is longer than `first_max`, a first clause (at
    least FIRST_MIN_CHARS where the clauses allow) and upstream's chunks of the rest."""
    text = text.strip()
    chunks = upstream_chunks(text)
    if not chunks or len(chunks[0]) <= first_max:
        return chunks
    first, rest = _first_clause(text, first_max)
    return [first, *upstream_chunks(rest)] if rest else [first]


def split_for_speech(text: str, chunking: Chunking = "latency") -> list[str]:
    return latency_chunks(text) if chunking == "latency" else upstream_chunks(text.strip())


def _first_clause(text: str, first_max: int) -> tuple[str, str]:
    clauses = _CLAUSES.split(text)
    first = clauses[0]
    taken = 1
    while len(first) < FIRST_MIN_CHARS and taken < len(clauses):
        if len(first) + 1 + len(clauses[taken]) > first_max:
            break
        first = f"{first} {clauses[taken]}"
        taken += 1
    rest = " ".join(clauses[taken:])
    if len(first) > first_max:
        cut = first.rfind(" ", 0, first_max + 1)
        head, tail = (first[:first_max], first[first_max:]) if cut <= 0 else (
            first[:cut], first[cut + 1 :])
        first, rest = head, f"{tail} {rest}".strip()
    return first, rest
