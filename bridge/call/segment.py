"""Cut agent text into pieces for TTS: sentences, with a short first piece so speech starts early.

Latin and Arabic punctuation both end pieces. The first piece is cut at a clause boundary
(, ; : ، ؛) when the first sentence is long or still incomplete, because time to first audio grows
with the length of the first request. Text may arrive whole or in pieces (a streaming agent); the
same rules apply, and a piece leaves as soon as it is complete. No piece is over
MAX_PIECE_CHARS (SILMA's public API refuses longer text): a longer sentence is cut at its
latest clause end that fits (v2_protocol.split_text), never inside a pronunciation hint.
Pure: no I/O.
"""

from __future__ import annotations

import re

from bridge.silma.v2_protocol import MAX_TEXT_CHARS, split_text

# A sentence is complete once its end punctuation is followed by white space.
_SENTENCE_END = re.compile(r"[.!?؟…][\"')\]]*\s+")
_CLAUSE_END = re.compile(r"[,;:،؛]\s+")
FIRST_PIECE_MAX_CHARS = 60
MIN_CLAUSE_CHARS = 12
MAX_PIECE_CHARS = MAX_TEXT_CHARS


class Segmenter:
    def __init__(self) -> None:
        self._buffer = ""
        self._first = True

    def push(self, text: str) -> list[str]:
        """Add text; return the pieces it completed."""
        self._buffer += text
        pieces: list[str] = []
        while (cut := self._next_cut()) is not None:
            piece, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
            if piece:
                pieces += _capped(piece)
                self._first = False
        return pieces

    def flush(self) -> list[str]:
        """The text is complete: whatever is left is the last piece."""
        rest, self._buffer = self._buffer.strip(), ""
        return _capped(rest) if rest else []

    def _next_cut(self) -> int | None:
        if not self._first:
            sentence = _SENTENCE_END.search(self._buffer)
            return sentence.end() if sentence else None
        # First piece: at least MIN_CLAUSE_CHARS (a lone "Hi!" plays too briefly to cover the
        # next piece's synthesis), a whole sentence if short, else its first clause.
        sentence = _SENTENCE_END.search(self._buffer, MIN_CLAUSE_CHARS - 1)
        if sentence and len(self._buffer[: sentence.end()].strip()) <= FIRST_PIECE_MAX_CHARS:
            return sentence.end()
        for clause in _CLAUSE_END.finditer(self._buffer, MIN_CLAUSE_CHARS - 1):
            if len(self._buffer[: clause.end()].strip()) > FIRST_PIECE_MAX_CHARS or (
                    sentence and clause.start() > sentence.start()):
                break
            return clause.end()
        return sentence.end() if sentence else None


def _capped(piece: str) -> list[str]:
    return [piece] if len(piece) <= MAX_PIECE_CHARS else split_text(piece, MAX_PIECE_CHARS)


def split_for_tts(text: str) -> list[str]:
    """Whole text: its pieces, first one short."""
    segmenter = Segmenter()
    return segmenter.push(text) + segmenter.flush()
