"""Splitting a reply into synthesis chunks: a short first clause, then sentence-sized pieces.

Pure string work. The first chunk is kept short because its synthesis time is the caller's
silence; later chunks are whole sentences (merged up to a size) because each chunk costs a
fixed overhead (the reference clip is re-encoded with it) and prosody is best within a sentence.
"""

from __future__ import annotations

import re

FIRST_MIN_CHARS = 12  # "Hi," alone is too short to sound natural: merge with what follows
FIRST_MAX_CHARS = 60
MAX_CHARS = 140  # silma-tts 1.0.5 uses 120-character chunks; a sentence may run a little over
SENTENCE_END = ".!?؟…"
CLAUSE_END = ",;:،؛"
# Punctuation followed by whitespace (or the end) closes a piece; "3.5" and "e.g.x" do not.
_SENTENCES = re.compile(rf"(?<=[{re.escape(SENTENCE_END)}])\s+")
_CLAUSES = re.compile(rf"(?<=[{re.escape(CLAUSE_END + SENTENCE_END)}])\s+")
_SPACE = re.compile(r"\s+")


def split_for_speech(
    text: str, *, first_max: int = FIRST_MAX_CHARS, max_chars: int = MAX_CHARS
) -> list[str]:
    """Chunks in speaking order; joined with spaces they give back `text` (whitespace aside)."""
    text = _SPACE.sub(" ", text).strip()
    if not text:
        return []
    first, rest = _first_clause(text, first_max)
    chunks = [first]
    pending = ""
    for sentence in _SENTENCES.split(rest) if rest else ():
        for piece in _fit(sentence, max_chars):
            if pending and len(pending) + 1 + len(piece) > max_chars:
                chunks.append(pending)
                pending = piece
            else:
                pending = f"{pending} {piece}" if pending else piece
    if pending:
        chunks.append(pending)
    return chunks


def pause_after(chunk: str) -> float:
    """Seconds of silence a listener expects after this chunk (before the next one)."""
    end = chunk.rstrip()[-1:]
    if end and end in SENTENCE_END:
        return 0.3
    if end and end in CLAUSE_END:
        return 0.15
    return 0.05  # cut mid-clause at a word boundary: only a breath


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
        head, tail = _cut_words(first, first_max)
        first, rest = head, f"{tail} {rest}".strip()
    return first, rest


def _fit(sentence: str, max_chars: int) -> list[str]:
    """A sentence as pieces of at most `max_chars`: clauses first, then words."""
    if len(sentence) <= max_chars:
        return [sentence]
    pieces: list[str] = []
    for clause in _CLAUSES.split(sentence):
        while len(clause) > max_chars:
            head, clause = _cut_words(clause, max_chars)
            pieces.append(head)
        if pieces and len(pieces[-1]) + 1 + len(clause) <= max_chars:
            pieces[-1] = f"{pieces[-1]} {clause}"
        else:
            pieces.append(clause)
    return pieces


def _cut_words(text: str, limit: int) -> tuple[str, str]:
    """Cut at the last space before `limit` (or at `limit` inside one very long word)."""
    cut = text.rfind(" ", 0, limit + 1)
    if cut <= 0:
        return text[:limit], text[limit:]
    return text[:cut], text[cut + 1 :]
