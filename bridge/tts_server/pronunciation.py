"""SILMA's pronunciation hints, expanded into words every engine reads right. Pure: no I/O.

    <STAG_PN>92005455</STAG_PN>         digits one by one: "nine two zero zero five four five five"
    <STAG_EMAIL>a.b@c.com</STAG_EMAIL>  spelled: letter names, "dot", "at"
    <STAG_LINK>www.silma.ai/tts</STAG_LINK>  "double you double you double you dot silma dot
                                        eigh eye slash tts": words of 3+ letters read as words,
                                        shorter ones and "www" spelled, the scheme dropped
    <STAG_OTHER>text</STAG_OTHER>       an unknown hint: its tags dropped, its text kept

English words for the English model, Arabic ones for the Arabic models (MSA and Najdi); a
request on our own protocol names no model, so there the text decides (`language_of`: any
Arabic letter, Arabic; else English). Words
rather than separated digits ("9 2 0 0"): Piper's phonemizer reads those right, but the silma
engine reads its text as it is unless its optional normalizer is installed, and no normalizer
turns Latin letters of an e-mail address into Arabic letter names. A tag left unclosed (or the
inner tags of nested hints) is dropped too, so no engine ever reads "STAG" aloud.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Literal

from bridge.silma.v2_protocol import HINT

Language = Literal["en", "ar"]

DIGITS: Mapping[Language, tuple[str, ...]] = {
    "en": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "ar": ("صفر", "واحد", "اثنان", "ثلاثة", "أربعة", "خمسة", "ستة", "سبعة", "ثمانية", "تسعة"),
}
# Letter names, not the bare letters: in a row of letters Piper reads "a" as the article, and a
# lone Latin letter in Arabic text is not read at all. "eigh", not "ay": Piper says "ay" as "eye".
# tests/integration/test_tts_server_v2.py checks that Piper says each English name as it says
# the letter alone.
LETTERS: Mapping[Language, tuple[str, ...]] = {
    "en": ("eigh", "bee", "see", "dee", "ee", "ef", "gee", "aitch", "eye", "jay", "kay", "el",
           "em", "en", "oh", "pee", "cue", "ar", "ess", "tee", "you", "vee", "double you",
           "ex", "why", "zee"),
    "ar": ("إيه", "بي", "سي", "دي", "إي", "إف", "جي", "إتش", "آي", "جيه", "كيه", "إل", "إم",
           "إن", "أو", "بي", "كيو", "آر", "إس", "تي", "يو", "في", "دبليو", "إكس", "واي", "زد"),
}
SYMBOLS: Mapping[Language, Mapping[str, str]] = {
    "en": {"@": "at", ".": "dot", "-": "dash", "_": "underscore", "+": "plus", "/": "slash",
           ":": "colon", "?": "question mark", "=": "equals", "&": "and", "#": "hash",
           "%": "percent", "~": "tilde"},
    "ar": {"@": "آت", ".": "نقطة", "-": "شرطة", "_": "شرطة سفلية", "+": "زائد",
           "/": "شرطة مائلة", ":": "نقطتان", "?": "علامة استفهام", "=": "يساوي", "&": "و",
           "#": "هاش", "%": "بالمئة", "~": "تيلدا"},
}
# A pause between the groups of a phone number ("920 054 55"), as a person reading it makes.
GROUP_PAUSE: Mapping[Language, str] = {"en": ", ", "ar": "، "}

_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*://", re.IGNORECASE)
_LETTER_RUN = re.compile(r"[^\W\d_]+")
# One digit, a run of letters, or any other character (each a group separator but "+").
_PHONE_TOKEN = re.compile(r"\d|[^\W\d_]+|.", re.DOTALL)
_LEFTOVER_TAG = re.compile(r"</?STAG_[A-Z]*>")
_SPACES = re.compile(r"[ \t]{2,}")
_SHORT_WORD = 2  # in a link, words this short are spelled ("ai", "co"): they are not words


# Arabic letters (not its digits or punctuation, which English text may borrow): the basic
# block's letters, its supplement and extended-A blocks, and the presentation forms.
_ARABIC_LETTER = re.compile(
    "[\u0620-\u064a\u066e-\u066f\u0671-\u06d3\u06d5\u06ee-\u06ef\u06fa-\u06fc\u06ff"
    "\u0750-\u077f\u08a0-\u08c9\ufb50-\ufdfb\ufe70-\ufefc]")


def language_of(text: str) -> Language:
    """The language a text's hints are read in where no model says it: Arabic once it holds
    an Arabic letter (a Latin phone number in an Arabic sentence is read in Arabic), else
    English."""
    return "ar" if _ARABIC_LETTER.search(text) else "en"


def read_hints(text: str, language: Language | None = None) -> str:
    """`text` as an engine should get it: its hints in words, in `language` (None: the text's
    own, `language_of`); a text without any hint is left exactly as it is. Raises ValueError
    when nothing is left to say."""
    if "STAG_" not in text:  # no hint, nor a stray tag: nothing to read, nothing to change
        return text
    spoken = expand_hints(text, language or language_of(text))
    if not spoken:
        raise ValueError("text says nothing once its hints are read")
    return spoken


def expand_hints(text: str, language: Language) -> str:
    """`text` with every <STAG_*> hint replaced by the words that say it."""
    expanded = HINT.sub(lambda m: _padded(m, _expand(m.group(1), m.group(2), language)), text)
    return _SPACES.sub(" ", _LEFTOVER_TAG.sub(" ", expanded)).strip()


def _expand(kind: str, content: str, language: Language) -> str:
    reader = _READERS.get(kind)
    if reader is None:  # an unknown hint may hold known ones
        return expand_hints(content, language)
    return reader(content.strip(), language)


def _padded(hint: re.Match[str], words: str) -> str:
    """The words, kept apart from a word that touches the hint ("Call<STAG_PN>..")."""
    text, start, end = hint.string, hint.start(), hint.end()
    before = " " if start > 0 and text[start - 1].isalnum() else ""
    after = " " if end < len(text) and text[end].isalnum() else ""
    return f"{before}{words}{after}"


def _digit(char: str) -> int:
    """The value of a decimal digit: ASCII, Arabic-Indic (U+0660..) or Eastern (U+06F0..)."""
    return unicodedata.decimal(char)


def _letter(char: str, language: Language) -> str:
    """A Latin letter's name; any other letter (an Arabic one) as it is."""
    lower = char.lower()
    if "a" <= lower <= "z":
        return LETTERS[language][ord(lower) - ord("a")]
    return char


def _symbol(char: str, language: Language) -> str:
    return SYMBOLS[language].get(char, char)


def phone_number(content: str, language: Language) -> str:
    """Digits one by one, a pause between groups, "+" said; letters (800-FLOWERS) kept."""
    groups: list[list[str]] = [[]]
    for token in _PHONE_TOKEN.findall(content):
        if token.isdecimal():
            groups[-1].append(DIGITS[language][_digit(token)])
        elif token == "+":
            groups[-1].append(SYMBOLS[language][token])
        elif token.isalpha():
            groups[-1].append(token)
        elif groups[-1]:  # any separator ends a group
            groups.append([])
    return GROUP_PAUSE[language].join(" ".join(group) for group in groups if group)


def email(content: str, language: Language) -> str:
    """Every character spelled: letter names, digit words, symbols named."""
    return " ".join(_spell(char, language) for char in content if not char.isspace())


def link(content: str, language: Language) -> str:
    """The scheme dropped and the address read: words as words, "www" and short ones spelled,
    digits one by one, symbols named; a trailing slash is not said."""
    address = _SCHEME.sub("", content).rstrip("/")
    said: list[str] = []
    cursor = 0
    for run in _LETTER_RUN.finditer(address):
        said += [_spell(char, language) for char in address[cursor:run.start()]
                 if not char.isspace()]
        word = run.group(0)
        if len(word) <= _SHORT_WORD or word.lower() == "www":
            said += [_letter(char, language) for char in word]
        else:
            said.append(word)
        cursor = run.end()
    said += [_spell(char, language) for char in address[cursor:] if not char.isspace()]
    return " ".join(said)


def _spell(char: str, language: Language) -> str:
    if char.isdecimal():
        return DIGITS[language][_digit(char)]
    if char.isalpha():
        return _letter(char, language)
    return _symbol(char, language)


_READERS: Mapping[str, Callable[[str, Language], str]] = {
    "PN": phone_number,
    "EMAIL": email,
    "LINK": link,
}
