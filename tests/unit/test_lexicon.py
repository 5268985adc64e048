"""Pronunciation overrides: the checks a tenant's list goes through, and the lexicon that
rewrites the agent's text, whole or streamed."""

from __future__ import annotations

import pytest

from bridge.call.lexicon import (
    EMPTY,
    MAX_OVERRIDES,
    MAX_SPOKEN_CHARS,
    MAX_WRITTEN_CHARS,
    Lexicon,
    check_overrides,
    compiled,
)
from bridge.store import PronunciationOverride as Entry

LEXICON = Lexicon([
    Entry("SILMA", "Silma"),
    Entry("Qatar", "Katar"),
    Entry("New York", "Noo York"),
    Entry("New York City", "the Big Apple"),
    Entry("US", "you ess", match_case=True),
    Entry("Dr. Smith", "Doctor Smith"),
    Entry("محمد", "مُحَمَّد"),
    Entry("قطر", "قَطَر"),
    Entry("A1", "B2"),
    Entry("B2", "C3"),
    Entry(".NET", "dot net"),
    Entry("C++", "see plus plus"),
    Entry("Ünïcode", "unicode"),
])

CASES = [
    # (text, rewritten, why)
    ("SILMA speaks.", "Silma speaks.", "a plain word"),
    ("silma, Silma and sIlMa", "Silma, Silma and Silma", "any case by default"),
    ("SILMA2 and XSILMA and SILMA_TTS", "SILMA2 and XSILMA and SILMA_TTS",
     "never inside a longer word"),
    ("SILMA's (SILMA) \"SILMA\" SILMA-based SILMA.", "Silma's (Silma) \"Silma\" Silma-based Silma.",
     "punctuation next to the word is no part of it"),
    ("Fly to Qatar!", "Fly to Katar!", "the end of a sentence"),
    ("I love New York City and New York.", "I love the Big Apple and Noo York.",
     "the longest entry first"),
    ("new  york\tcity", "the Big Apple", "any white space between the words"),
    ("New Yorker", "New Yorker", "the last word whole too"),
    ("the US, not us or Us", "the you ess, not us or Us", "match_case keeps to its case"),
    ("A1 then B2", "B2 then C3", "one pass: a spoken form is never replaced again"),
    ("Call Dr. Smith now", "Call Doctor Smith now", "a written form with a full stop"),
    ("مرحبا محمد، كيف حالك؟", "مرحبا مُحَمَّد، كيف حالك؟", "Arabic, with Arabic punctuation"),
    ("محمدٌ", "محمدٌ", "a diacritic belongs to the word it follows"),
    ("ومحمد", "ومحمد", "a joined prefix makes another word"),
    ("زيارة قطر.", "زيارة قَطَر.", "Arabic at the end of a sentence"),
    ("«قطر»", "«قَطَر»", "Arabic quotation marks"),
    ("Use .NET, not ASP.NET", "Use dot net, not ASP.NET", "an entry that starts with a symbol"),
    ("C++ and C++11", "see plus plus and C++11", "an entry that ends with a symbol"),
    ("ÜNÏCODE", "unicode", "case folding beyond ASCII"),
    ("Call <STAG_PN>SILMA 12</STAG_PN> SILMA", "Call <STAG_PN>SILMA 12</STAG_PN> Silma",
     "never inside a hint"),
    ("<STAG_EMAIL>qatar@x.qa</STAG_EMAIL>, Qatar", "<STAG_EMAIL>qatar@x.qa</STAG_EMAIL>, Katar",
     "a hint's text is SILMA's to read"),
    ("<STAG_PN>unclosed SILMA", "<STAG_PN>unclosed Silma", "an unclosed tag is no hint"),
    ("x < y and SILMA > z", "x < y and Silma > z", "angle brackets that are no tag"),
    ("", "", "nothing"),
]


@pytest.mark.parametrize(("text", "rewritten"), [c[:2] for c in CASES],
                         ids=[c[2] for c in CASES])
def test_rewrite(text: str, rewritten: str) -> None:
    assert LEXICON.rewrite(text) == rewritten


@pytest.mark.parametrize("text", [c[0] for c in CASES], ids=[c[2] for c in CASES])
def test_streamed_text_says_the_same_however_it_is_cut(text: str) -> None:
    # Every cut into two pushes, and one push per character: a written form split across
    # pushes is still found, and nothing is said twice or lost.
    whole = LEXICON.rewrite(text)
    for cut in range(len(text) + 1):
        stream = LEXICON.stream()
        assert stream.push(text[:cut]) + stream.push(text[cut:]) + stream.flush() == whole, cut
    stream = LEXICON.stream()
    assert "".join(stream.push(char) for char in text) + stream.flush() == whole


def test_a_stream_holds_back_only_what_may_still_become_a_match() -> None:
    stream = LEXICON.stream()
    assert stream.push("Hello there. Call Dr") == "Hello there. Call "  # "Dr" may be "Dr. Smith"
    assert stream.push(". Smith") == ""  # "Dr. Smith" is whole, but the word may go on
    assert stream.push(" today. New") == "Doctor Smith today. "
    assert stream.push(" York") == ""  # "New York City" may still come
    assert stream.push(" is big.") == "Noo York is big."
    assert stream.push(" <STAG_PN>12") == " "  # an open hint waits for its end
    assert stream.push("</STAG_PN> ok") == "<STAG_PN>12</STAG_PN> ok"
    assert stream.flush() == ""


def test_a_hint_that_never_closes_is_not_held_for_ever() -> None:
    # A hint longer than one TTS piece is no hint (the segmenter drops its tags), so the text
    # after an open tag is let go once it is that long, not held to the end of the reply.
    stream = LEXICON.stream()
    said = stream.push("<STAG_PN>" + "talk " * 60)
    assert said.startswith("<STAG_PN>talk")


def test_an_empty_lexicon_passes_text_through() -> None:
    assert not EMPTY and compiled([]) is EMPTY
    stream = EMPTY.stream()
    assert stream.push("Call Dr") == "Call Dr" and stream.flush() == ""
    assert EMPTY.rewrite("SILMA <STAG_PN>1</STAG_PN>") == "SILMA <STAG_PN>1</STAG_PN>"


def test_a_case_exact_entry_wins_a_tie_with_an_any_case_one() -> None:
    lexicon = Lexicon([Entry("us", "us, the word"), Entry("US", "you ess", match_case=True)])
    assert lexicon.rewrite("US and us and Us") == "you ess and us, the word and us, the word"


# -- checks -----------------------------------------------------------------------------------
def test_a_list_is_normalized() -> None:
    entries, errors = check_overrides([
        {"written": "  New \t York ", "spoken": " Noo  York "},
        {"written": "Cafe\u0301", "spoken": "kaf-ay", "match_case": True},  # decomposed é
    ])
    assert errors == {}
    assert entries == [Entry("New York", "Noo York"), Entry("Café", "kaf-ay", True)]
    assert Lexicon(entries).rewrite("Café") == "kaf-ay"  # stored NFC, matched as agents write


@pytest.mark.parametrize(("value", "field", "needle"), [
    ("SILMA", "overrides", "expected a list"),
    ([{"written": "a", "spoken": "b"}] * (MAX_OVERRIDES + 1), "overrides",
     f"at most {MAX_OVERRIDES} pronunciations"),
    (["SILMA"], "overrides.0", "an object"),
    ([{"written": "a", "spoken": "b", "voice": "x"}], "overrides.0", "unknown field(s): voice"),
    ([{"written": "x" * (MAX_WRITTEN_CHARS + 1), "spoken": "b"}], "overrides.0.written",
     f"at most {MAX_WRITTEN_CHARS} characters (this has {MAX_WRITTEN_CHARS + 1})"),
    ([{"written": "a", "spoken": "y" * (MAX_SPOKEN_CHARS + 1)}], "overrides.0.spoken",
     f"at most {MAX_SPOKEN_CHARS} characters"),
    ([{"written": "  ", "spoken": "b"}], "overrides.0.written", "type the word"),
    ([{"written": "a"}], "overrides.0.spoken", "type how it should be said"),
    ([{"written": 7, "spoken": "b"}], "overrides.0.written", "must be text"),
    ([{"written": "...", "spoken": "b"}], "overrides.0.written", "needs a letter or a digit"),
    ([{"written": "<STAG_PN>", "spoken": "b"}], "overrides.0.written", "< and >"),
    ([{"written": "a", "spoken": "<b>"}], "overrides.0.spoken", "< and >"),
    ([{"written": "a\x00", "spoken": "b"}], "overrides.0.written", "control characters"),
    ([{"written": "a", "spoken": "b", "match_case": "yes"}], "overrides.0.match_case",
     "true or false"),
    ([{"written": "SILMA", "spoken": "a"}, {"written": "silma", "spoken": "b"}],
     "overrides.1.written", "the same word as row 1"),
    ([{"written": "US", "spoken": "a", "match_case": True}, {"written": "us", "spoken": "b"}],
     "overrides.1.written", "the same word as row 1"),
    ([{"written": "us", "spoken": "a", "match_case": True},
      {"written": "US", "spoken": "b", "match_case": True},
      {"written": "US", "spoken": "c", "match_case": True}],
     "overrides.2.written", "the same word as row 2"),
])
def test_a_bad_list_names_the_field_at_fault(value: object, field: str, needle: str) -> None:
    entries, errors = check_overrides(value)
    assert entries == []
    assert needle in errors[field], errors


def test_two_case_exact_entries_that_differ_in_case_both_stay() -> None:
    entries, errors = check_overrides([
        {"written": "US", "spoken": "you ess", "match_case": True},
        {"written": "us", "spoken": "us", "match_case": True}])
    assert errors == {} and len(entries) == 2


def test_the_largest_list_allowed_is_accepted() -> None:
    raw = [{"written": f"w{i}" + "x" * (MAX_WRITTEN_CHARS - 6), "spoken": "y" * MAX_SPOKEN_CHARS}
           for i in range(MAX_OVERRIDES)]
    entries, errors = check_overrides(raw)
    assert errors == {} and len(entries) == MAX_OVERRIDES
    assert Lexicon(entries).rewrite(raw[-1]["written"] + "!") == "y" * MAX_SPOKEN_CHARS + "!"
