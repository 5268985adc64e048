"""A tenant's pronunciation overrides ("SILMA" said "Silma", "Qatar" said "Katar"): checked,
compiled once into a lexicon, and applied to the agent's text before it is cut into TTS pieces.
Pure: no I/O.

Matching rules, chosen for words a contact centre needs said its way:
- Whole words only: the characters just before and after a match are no word characters.
  Word characters are letters, digits, "_", combining marks (Arabic harakat, shadda) and the
  zero-width joiners: "علي" does not match the start of "عليٌّ", "SILMA" not inside "SILMA2",
  ".NET" not inside "ASP.NET". Punctuation next to a word is no part of it: "SILMA's",
  "(SILMA)" and "SILMA-based" all match. Arabic writes some words joined to the next one
  ("وقطر", "and Qatar"): such a form is its own entry.
- Case: an entry matches any case ("silma", "SILMA") unless it says `match_case` (then "US"
  the country is not "us" the word). Scripts without case, Arabic among them, match as written.
- White space in a written form matches any run of white space in the text ("New  York").
- Longest entry first at each place ("New York City" before "New York"), left to right, in one
  pass: a spoken form is never looked at again, so entries cannot chain ("A" → "B", "B" → "C"
  says "B" for "A").
- Never inside a pronunciation hint (<STAG_PN>…</STAG_PN>): its text is SILMA's to read. A hint
  longer than one TTS piece is not kept as a hint by the segmenter either, so neither here.

Cost: entries go into two tries (exact, lower-cased) once per settings change. A pass looks at
each character once to see whether an entry can start there; only where one can does it walk a
trie, at most MAX_WRITTEN_CHARS steps (plus a run of white space), so a pass is linear in the
text whatever the number of entries.

Streamed text (a remote agent's partial says) goes through `LexiconStream`: it holds back only
the tail that could still become a match (the start of "New York" while "York" has not come, an
open hint), so a written form split across two pushes is still found, and text that can be no
match's start leaves at once.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

from bridge.silma.v2_protocol import HINT, MAX_TEXT_CHARS
from bridge.store.models import PronunciationOverride

# A tenant's brand, product and staff names with room to spare, and a table a person can still
# review on a phone; the whole list is one small read per call.
MAX_OVERRIDES = 200
# A name, a product code or a short phrase ("Qatar Airways Privilege Club" is 28). It also bounds
# the walk of a match attempt, which keeps a pass linear.
MAX_WRITTEN_CHARS = 64
# Twice the written bound: room for a respelling or a fully vowelled Arabic name, still far
# inside one TTS piece (250 characters), so a replacement alone never forces a cut.
MAX_SPOKEN_CHARS = 128
# The longest hint kept whole: the segmenter drops the tags of one longer than a piece.
MAX_HINT_CHARS = MAX_TEXT_CHARS

_SPACES = re.compile(r"\s+")
# What could still become a hint when more text comes: "<", "<STA", "<STAG_PN>12</STAG_P".
_HINT_START = re.compile(r"<(?:S(?:T(?:A(?:G(?:_[A-Z]*(?:>.*)?)?)?)?)?)?", re.DOTALL)
_HOLD = object()  # a match attempt that needs text not yet pushed
_JOINERS = frozenset("\u200c\u200d")  # ZWNJ, ZWJ: inside Persian and Arabic words


def is_word_char(char: str) -> bool:
    """Letters, digits, "_", combining marks and joiners: what a whole-word match may not cut."""
    return (char.isalnum() or char == "_" or char in _JOINERS
            or unicodedata.category(char).startswith("M"))


# -- checking what a tenant typed ----------------------------------------------------------
def normalized(text: str) -> str:
    """As stored and matched: NFC (one code point per accented letter, as agents write them),
    white space collapsed to single spaces, trimmed."""
    return _SPACES.sub(" ", unicodedata.normalize("NFC", text)).strip()


def _problem(text: str, limit: int, empty: str) -> str | None:
    if not text:
        return empty
    if len(text) > limit:
        return f"at most {limit} characters (this has {len(text)})"
    if "<" in text or ">" in text:
        return "< and > are kept for SILMA's hints (<STAG_PN>…): leave them out"
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in text):
        return "control characters are not allowed"
    return None


def check_overrides(value: object) -> tuple[list[PronunciationOverride], dict[str, str]]:
    """A list as the settings API takes it ([{"written", "spoken", "match_case"?}]) → the
    entries normalized, and an error per field at fault: "overrides" for the list itself,
    "overrides.<row>.<field>" (row from 0) for one entry's."""
    if not isinstance(value, list):
        return [], {"overrides": "expected a list of {written, spoken, match_case}"}
    if len(value) > MAX_OVERRIDES:
        return [], {"overrides": f"at most {MAX_OVERRIDES} pronunciations (this has "
                                 f"{len(value)})"}
    entries: list[PronunciationOverride] = []
    errors: dict[str, str] = {}
    # The first row of each written form: of any case, lower-cased; case-exact, as written and
    # lower-cased.
    any_case: dict[str, int] = {}
    exact: dict[str, int] = {}
    exact_folded: dict[str, int] = {}
    for row, item in enumerate(value):
        where = f"overrides.{row}"
        if not isinstance(item, dict):
            errors[where] = "each pronunciation is an object with written and spoken"
            continue
        if unknown := sorted(item.keys() - {"written", "spoken", "match_case"}):
            errors[where] = f"unknown field(s): {', '.join(map(str, unknown))}"
        match_case = item.get("match_case", False)
        if not isinstance(match_case, bool):
            errors[f"{where}.match_case"] = "match_case must be true or false"
            match_case = False
        texts = []
        for field, limit, empty in (
                ("written", MAX_WRITTEN_CHARS, "type the word as it is written"),
                ("spoken", MAX_SPOKEN_CHARS, "type how it should be said")):
            raw = item.get(field, "")
            text = normalized(raw) if isinstance(raw, str) else None
            problem = "must be text" if text is None else _problem(text, limit, empty)
            if problem is None and field == "written" and text is not None \
                    and not any(c.isalnum() for c in text):
                problem = "needs a letter or a digit"
            if problem is not None:
                errors[f"{where}.{field}"] = problem
            texts.append(text or "")
        entry = PronunciationOverride(texts[0], texts[1], match_case)
        if f"{where}.written" not in errors:
            # Two entries that would match the same text: which one wins would be a guess.
            # Only two case-exact ones that differ in case ("US", "us") can both stay.
            folded = entry.written.lower()
            earlier = any_case.get(folded)
            if earlier is None:
                earlier = (exact if match_case else exact_folded).get(
                    entry.written if match_case else folded)
            if earlier is not None:
                errors[f"{where}.written"] = f"the same word as row {earlier + 1}"
            elif match_case:
                exact[entry.written] = row
                exact_folded.setdefault(folded, row)
            else:
                any_case[folded] = row
        entries.append(entry)
    return (entries if not errors else []), errors


# -- the compiled lexicon -------------------------------------------------------------------
class _Node:
    __slots__ = ("next", "spoken")

    def __init__(self) -> None:
        self.next: dict[str, _Node] = {}
        self.spoken: str | None = None


def _step(text: str, at: int, fold: bool) -> tuple[str, int]:
    """The trie key at `at` and where the next one starts: a run of white space is one " "."""
    char = text[at]
    if char.isspace():
        end = at + 1
        while end < len(text) and text[end].isspace():
            end += 1
        return " ", end
    return (char.lower() if fold else char), at + 1


class Lexicon:
    """A tenant's overrides, compiled. `rewrite` a whole text, or `stream()` a streamed one."""

    def __init__(self, entries: Iterable[PronunciationOverride] = ()) -> None:
        self.entries: tuple[PronunciationOverride, ...] = tuple(entries)
        self._exact, self._folded = _Node(), _Node()
        for entry in self.entries:
            root = self._exact if entry.match_case else self._folded
            node, at = root, 0
            while at < len(entry.written):
                key, at = _step(entry.written, at, not entry.match_case)
                node = node.next.setdefault(key, _Node())
            if node.spoken is None:  # check_overrides refuses duplicates; first one wins
                node.spoken = entry.spoken
        self._starts = frozenset(self._exact.next) | frozenset(self._folded.next)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def rewrite(self, text: str) -> str:
        """`text` with every override applied."""
        if not self.entries:
            return text
        return self._scan(text, "", final=True)[0]

    def stream(self) -> LexiconStream:
        return LexiconStream(self)

    def _scan(self, text: str, before: str, *, final: bool) -> tuple[str, int]:
        """`text` rewritten up to the returned index; not `final`: up to where a match might
        still need text that has not come. `before` is the character ahead of `text`."""
        out: list[str] = []
        copied = at = 0
        size = len(text)
        while at < size:
            char = text[at]
            if char == "<":
                hint = HINT.match(text, at, min(size, at + MAX_HINT_CHARS))
                if hint is not None:
                    at = hint.end()  # copied as it is
                    continue
                if not final and size - at < MAX_HINT_CHARS and _HINT_START.fullmatch(text, at):
                    break
            elif char in self._starts or char.lower() in self._starts:
                previous = text[at - 1] if at else before
                if not (previous and is_word_char(previous)):
                    found = self._longest(text, at, final)
                    if found is _HOLD:
                        break
                    if isinstance(found, tuple):
                        end, spoken = found
                        out += (text[copied:at], spoken)
                        at = copied = end
                        continue
            at += 1
        out.append(text[copied:at])
        return "".join(out), at

    def _longest(self, text: str, at: int, final: bool) -> tuple[int, str] | object | None:
        """The longest entry matching at `at` (end, spoken form); exact ones win a tie."""
        best: tuple[int, str] | None = None
        for root, fold in ((self._folded, True), (self._exact, False)):
            found = _walk(root, text, at, fold, final)
            if found is _HOLD:
                return _HOLD
            if isinstance(found, tuple) and (best is None or found[0] >= best[0]):
                best = found
        return best


def _walk(root: _Node, text: str, at: int, fold: bool, final: bool
          ) -> tuple[int, str] | object | None:
    node, end, size = root, at, len(text)
    best: tuple[int, str] | None = None
    while True:
        if node.spoken is not None:
            if end < size:
                if not is_word_char(text[end]):
                    best = (end, node.spoken)
            elif final:
                best = (end, node.spoken)
            else:
                return _HOLD  # the next push may continue the word, or a longer entry
        if end >= size:
            return best if final or not node.next else _HOLD
        key, after = _step(text, end, fold)
        child = node.next.get(key)
        if child is None:
            return best
        node, end = child, after


class LexiconStream:
    """One utterance's text as it is pushed, rewritten: each push returns what is final."""

    def __init__(self, lexicon: Lexicon) -> None:
        self._lexicon = lexicon
        self._pending = ""
        self._before = ""  # the last character already handed on, for the word boundary

    def push(self, text: str) -> str:
        if not self._lexicon:
            return text
        self._pending += text
        out, used = self._lexicon._scan(self._pending, self._before, final=False)
        if used:
            self._before = self._pending[used - 1]
            self._pending = self._pending[used:]
        return out

    def flush(self) -> str:
        """The text is complete: the rest, rewritten."""
        out = self._lexicon._scan(self._pending, self._before, final=True)[0]
        self._pending = ""
        return out


EMPTY = Lexicon()


def compiled(entries: Sequence[PronunciationOverride]) -> Lexicon:
    return Lexicon(entries) if entries else EMPTY
